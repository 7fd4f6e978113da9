"""Rooms: several members, one conversation, one AI answer streamed to all (docs/rooms.md)."""
