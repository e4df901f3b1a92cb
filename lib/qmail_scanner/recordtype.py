"""`@record`: the dataclass declarations we use, without importing dataclasses.

Every message starts a new process, and `import dataclasses` (which pulls in inspect, ast,
dis, tokenize and enum) costs about 13 ms there, twice the interpreter's own start-up.
This decorator takes the same class declarations (annotated fields, defaults,
`field(default_factory=...)`, `frozen=True`, `__post_init__`) and gives the class an
`__init__`, `__repr__` and `__eq__` (and `__hash__` when frozen) that behave like the
ones dataclasses writes.
"""

from __future__ import annotations

_MISSING = object()


class Field:
    """One declared field: its name and its default or default factory."""

    __slots__ = ("default", "default_factory", "name")

    def __init__(self, default: object = _MISSING, default_factory: object = _MISSING) -> None:
        self.name = ""
        self.default = default
        self.default_factory = default_factory


def field(*, default: object = _MISSING, default_factory: object = _MISSING) -> Field:
    """Declare a field with a default factory (mutable defaults), as dataclasses.field."""
    return Field(default, default_factory)


def fields(record_class: type) -> tuple[Field, ...]:
    """The declared fields of a record class, in order."""
    return record_class.__record_fields__


def _collect(cls: type) -> list[Field]:
    declared: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        for inherited in getattr(base, "__record_fields__", ()):
            declared[inherited.name] = inherited
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():  # noqa: RUF063 - own class only
        if str(annotation).startswith(("ClassVar", "typing.ClassVar")):
            continue
        value = cls.__dict__.get(name, _MISSING)
        spec = value if isinstance(value, Field) else Field(value)
        spec.name = name
        declared[name] = spec
        if isinstance(value, Field):
            if spec.default is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, spec.default)
    return list(declared.values())


def _build_init(specs: list[Field], frozen: bool, post_init: bool) -> object:
    """One generic __init__ per class (compiling a tailored one, as dataclasses does, costs ~1 ms)."""
    names = tuple(spec.name for spec in specs)
    known = frozenset(names)
    defaults = {spec.name: spec.default for spec in specs if spec.default is not _MISSING}
    factories = {spec.name: spec.default_factory for spec in specs if spec.default_factory is not _MISSING}
    assign = object.__setattr__

    def __init__(self, *args: object, **kwargs: object) -> None:
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__}() takes {len(names)} fields, {len(args)} given")
        values = dict(zip(names, args))
        for name, value in kwargs.items():
            if name not in known or name in values:
                raise TypeError(f"{type(self).__name__}() got an unexpected or repeated field {name!r}")
            values[name] = value
        for name in names:
            if name in values:
                value = values[name]
            elif name in factories:
                value = factories[name]()
            elif name in defaults:
                value = defaults[name]
            else:
                raise TypeError(f"{type(self).__name__}() is missing field {name!r}")
            assign(self, name, value)
        if post_init:
            self.__post_init__()

    return __init__


def _frozen_setattr(self: object, name: str, value: object) -> None:
    raise AttributeError(f"cannot assign to field {name!r} of a frozen record")


def record(cls: type | None = None, *, frozen: bool = False):
    """Class decorator: make cls a record of its annotated fields."""

    def build(cls: type) -> type:
        specs = _collect(cls)
        names = tuple(spec.name for spec in specs)
        cls.__record_fields__ = tuple(specs)
        cls.__init__ = _build_init(specs, frozen, hasattr(cls, "__post_init__"))

        def __repr__(self) -> str:
            inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
            return f"{type(self).__name__}({inner})"

        def __eq__(self, other: object) -> bool:
            if other.__class__ is not self.__class__:
                return NotImplemented
            return all(getattr(self, name) == getattr(other, name) for name in names)

        cls.__repr__ = __repr__
        cls.__eq__ = __eq__
        if frozen:
            cls.__setattr__ = _frozen_setattr
            cls.__hash__ = lambda self: hash(tuple(getattr(self, name) for name in names))
        else:
            cls.__hash__ = None
        return cls

    return build if cls is None else build(cls)


def replace(instance: object, **changes: object) -> object:
    """A copy of a record with some fields changed, as dataclasses.replace."""
    values = {spec.name: getattr(instance, spec.name) for spec in fields(type(instance))}
    values.update(changes)
    return type(instance)(**values)

