"""What a sweep needs before it runs on a cluster: the datasets its tasks download (mrpruner.cost)."""

import pytest

from mrpruner import cost


def test_datasets_follow_includes_and_groups(tmp_path):
    (tmp_path / "_base.yaml").write_text("dataset_path: someone/base-data\noutput_type: generate_until\n")
    (tmp_path / "mine_a.yaml").write_text("task: mine_a\ninclude: _base.yaml\ntest_split: test\n")
    (tmp_path / "mine_b.yaml").write_text("task: mine_b\ndataset_path: someone/other-data\n")
    (tmp_path / "mine_all.yaml").write_text("group: mine_all\ntask:\n  - mine_a\n  - mine_b\n")
    found = cost.datasets(["mine_a", "mine_b", "mine_all"], include_path=tmp_path)
    assert found == {"mine_a": ["someone/base-data"], "mine_b": ["someone/other-data"],
                     "mine_all": ["someone/base-data", "someone/other-data"]}
    with pytest.raises(ValueError, match="unknown lmms-eval task"):
        cost.datasets(["no_such_task_here"], include_path=tmp_path)
