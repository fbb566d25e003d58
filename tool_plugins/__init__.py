"""Report tools, one module each. Modules starting with an underscore hold shared helpers."""
