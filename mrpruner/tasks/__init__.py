"""lmms-eval tasks shipped with mrpruner: the miniatures' test splits (`mrpruner_mini_overview`,
`mrpruner_mini_detail`, `mrpruner_mini_tiles_overview`, `mrpruner_mini_tiles_detail`), written by
`mrpruner.mini.task.write_task`. mrpruner's sweeps and chapters find them by name; for the lmms-eval
command line, pass this folder with --include_path (`mrpruner.benchmarks.tasks_folder()`)."""
