"""The scripts that regenerate the tables and figures of docs/*.md.

Each runs from the repository root as `python -m benchmarks.studies.NAME`;
the document that shows its output names the command.
"""
