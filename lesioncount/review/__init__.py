"""Central reader review of a lesioncount output folder (the model; no Qt here).

- :mod:`.log`: the append-only decision log, one JSON line per action;
- :mod:`.state`: the automatic tables, decisions applied to them, the reviewed tables,
  two readers' disagreements, where a reader left off;
- :mod:`.layers`: a session's scans, maps and labels on one display grid in baseline space;
- :mod:`.reviewer`: :class:`Review`, one reader on one folder (what the napari widget calls);
- :mod:`.example`: a tiny contract-conforming output folder for tests and demos.
"""
from .log import DecisionLog, find_logs, log_path, read_log
from .reviewer import Review, default_reader, location
from .state import (DISAGREEMENT_COLUMNS, ReviewConfig, ReviewState, Tables, apply_decisions,
                    disagreements, is_output_folder, load_tables, match_lesion, resume_point,
                    reviewed_tables, write_disagreements, write_reviewed)
from .study import review_study

__all__ = ["DecisionLog", "find_logs", "log_path", "read_log", "Review", "default_reader",
           "location", "DISAGREEMENT_COLUMNS", "ReviewConfig", "ReviewState", "Tables",
           "apply_decisions", "disagreements", "is_output_folder", "load_tables", "match_lesion",
           "resume_point", "reviewed_tables", "write_disagreements", "write_reviewed",
           "review_study"]
