"""lmms-eval tasks shipped with mrpruner: the miniature's test split (`mrpruner_mini_overview`,
`mrpruner_mini_detail`), written by `mrpruner.mini.task.write_task`. mrpruner's sweeps and chapters
find them by name; for the lmms-eval command line, pass this folder with --include_path
(`mrpruner.benchmarks.tasks_folder()`)."""
