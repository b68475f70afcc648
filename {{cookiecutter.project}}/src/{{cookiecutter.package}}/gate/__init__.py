"""The PR gate: every input loaded once (git, DVC), a pure verdict, a rendered report."""
