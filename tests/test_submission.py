import numpy as np
import pandas as pd
import pytest

from src import submission
from src.errors import UserError


@pytest.fixture
def sample():
    return pd.DataFrame({"ID": ["b", "a", "c"], "x": 0, "y": 0})


def test_build_orders_like_sample(sample, tmp_path):
    sub = submission.build(["a", "b", "c"], np.array([[1, 0], [0, 1], [1, 1]]), sample)
    assert sub["ID"].tolist() == ["b", "a", "c"] and sub["x"].tolist() == [0, 1, 1]
    path = submission.write(sub, sample, tmp_path / "s.csv")
    assert pd.read_csv(path).equals(sub)


@pytest.mark.parametrize("bad, msg", [
    (lambda s: s.drop(columns="y"), "columns"),
    (lambda s: s[["ID", "y", "x"]], "columns"),
    (lambda s: s.iloc[:2], "rows"),
    (lambda s: s.iloc[[1, 0, 2]], "order"),
    (lambda s: s.assign(x=[0, 2, 1]), "0 or 1"),
    (lambda s: s.assign(x=[0, np.nan, 1]), "0 or 1"),
])
def test_validate_rejects(sample, bad, msg, tmp_path):
    good = submission.build(["b", "a", "c"], np.ones((3, 2)), sample)
    with pytest.raises(UserError, match=msg):
        submission.write(bad(good), sample, tmp_path / "s.csv")
    assert not (tmp_path / "s.csv").exists()


def test_missing_ids(sample):
    with pytest.raises(UserError, match="lack 1 test ids"):
        submission.build(["a", "b"], np.ones((2, 2)), sample)


def test_written_files_get_usual_permissions(sample, tmp_path):
    import os

    path = submission.write(submission.build(["b", "a", "c"], np.ones((3, 2)), sample), sample, tmp_path / "s.csv")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("bad, msg", [
    (lambda s: s.assign(ID=["b", "zz", "c"]), "sub.csv: ids are not the sample's ids in the sample's order (1 rows "
                                              "differ; first at row 2: 'zz' where the sample has 'a')"),
    (lambda s: s.assign(y=[0, 1, 2]), "sub.csv: labels must all be 0 or 1; 1 are not (first: 2 for label 'y', id c)"),
    (lambda s: s.iloc[:2], "sub.csv has 2 rows, the sample has 3"),
])
def test_validate_names_the_file_and_the_first_bad_row(sample, bad, msg):
    good = submission.build(["b", "a", "c"], np.zeros((3, 2)), sample)
    with pytest.raises(UserError) as e:
        submission.validate(bad(good), sample, "sub.csv")
    assert str(e.value) == msg
