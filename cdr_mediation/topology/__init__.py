"""Topics, tables' changelogs, the Faust app factory and its settings (DESIGN.md §3)."""
