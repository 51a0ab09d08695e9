"""The companion script's modules: dump reading, ELF, symbolization, profiles."""
