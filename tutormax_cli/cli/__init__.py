"""The command line: parse, call the library, render. No metric or storage logic lives here."""
