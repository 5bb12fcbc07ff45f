"""The trace format: schema, writer, reader, meta (import the module you need: the reader
brings pandas, which the recorder does not need)."""
