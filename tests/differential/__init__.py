"""The differential harness: crafted messages, what real mail parsers extract from them, and what our unpacker sees."""
