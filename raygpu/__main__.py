from raygpu.cli import entry

entry()
