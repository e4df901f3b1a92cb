"""Alert texts per language: templates/lang/<lang>.j2, one Jinja2 block per field, rendered at configure time."""

from __future__ import annotations

import re
from pathlib import Path

LANG_DIR = Path(__file__).resolve().parent.parent.parent / "templates" / "lang"
DEFAULT_LANG = "en_GB"
# Per-message values the engine fills in; a text may use only these.
PLACEHOLDERS = frozenset({"sender", "recipients", "subject", "reason", "date", "id", "host", "admin_description"})
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
# The original's language names (and locale names) that differ from the template names here.
LANG_ALIASES = {"tw_BIG5": "zh_TW", "zh_TW.Big5": "zh_TW", "nb_NO": "no_NO", "nn_NO": "no_NO"}


def available_languages(lang_dir: Path = LANG_DIR) -> list[str]:
    """The languages shipped, e.g. ['af_ZA', 'cs_CZ', ...]."""
    return sorted(path.stem for path in lang_dir.glob("*.j2"))


def normalise_lang(lang: str, lang_dir: Path = LANG_DIR) -> str:
    """`de_DE.UTF-8` -> `de_DE`; `C`/`POSIX`/empty -> en_GB; `pt` -> the first pt_* shipped."""
    lang = LANG_ALIASES.get(lang, lang)
    base = re.split(r"[.@]", lang or "", maxsplit=1)[0].replace("-", "_")
    base = LANG_ALIASES.get(base, base)
    if base in ("", "C", "POSIX"):
        return DEFAULT_LANG
    shipped = available_languages(lang_dir)
    if base in shipped:
        return base
    same_language = [name for name in shipped if name.split("_")[0].lower() == base.split("_")[0].lower()]
    if same_language:
        return same_language[0]
    raise ValueError(f"no alert texts for language {lang!r}; available: {', '.join(shipped)}")


def render_alert_texts(lang: str, lang_dir: Path = LANG_DIR) -> dict[str, str]:
    """Render every field of the language's template; checks it is complete and well-formed."""
    import jinja2

    name = normalise_lang(lang, lang_dir)
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(lang_dir)), undefined=jinja2.StrictUndefined, autoescape=False
    )
    template = environment.get_template(f"{name}.j2")
    context = template.new_context({"lang": name})
    texts = {block: " ".join("".join(render(context)).split()) for block, render in template.blocks.items()}
    reference = set(environment.get_template(f"{DEFAULT_LANG}.j2").blocks)
    missing, extra = reference - set(texts), set(texts) - reference
    if missing or extra:
        raise ValueError(f"alert texts {name}: missing {sorted(missing)}, unknown {sorted(extra)}")
    for field, text in texts.items():
        if not text:
            raise ValueError(f"alert texts {name}: {field} is empty")
        unknown = set(PLACEHOLDER.findall(text)) - PLACEHOLDERS
        if unknown:
            raise ValueError(f"alert texts {name}: {field} uses unknown placeholders {sorted(unknown)}")
    texts["lang"] = name
    return texts
