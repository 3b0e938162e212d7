"""lmms-eval tasks shipped with mrpruner: the miniature's test split (`mrpruner_mini_overview`,
`mrpruner_mini_detail`), written by `mrpruner.mini.task.write_task`. mrpruner's sweeps and the
chapters find them by themselves; for the lmms-eval command line, set LMMS_EVAL_PLUGINS=mrpruner
(lmms-eval then reads this folder) or pass --include_path with this folder."""
