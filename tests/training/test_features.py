"""Item features: validation naming file, row and column; the arrays each kind becomes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.artifact import FIRST_ID, FeatureSpec
from training.data.content import encode_features, fit_features, item_content
from training.data.directory import read_table
from training.data.features import check_features
from training.data.raw import DataError, Problems, RawTable
from training.data.vocab import Vocab

GENRES = FeatureSpec(column="genres", kind="multi_categorical")
YEAR = FeatureSpec(column="year", kind="numeric")
STUDIO = FeatureSpec(column="studio", kind="categorical")
VECTOR = FeatureSpec(column="emb", kind="vector", dim=3)


def items_csv(tmp_path: Path, text: str) -> RawTable:
    path = tmp_path / "items.csv"
    path.write_text(text)
    return read_table(path)


def problems_of(table: RawTable, *specs: FeatureSpec) -> list[str]:
    problems = Problems()
    check_features(table, specs, problems)
    return problems.items


def test_valid_items_have_no_problems(tmp_path: Path) -> None:
    table = items_csv(
        tmp_path,
        "item_id,genres,year,studio,emb_0,emb_1,emb_2\n"
        "a,Drama|Comedy,1995,X,0.1,0.2,0.3\nb,,,,,,\n",
    )
    assert problems_of(table, GENRES, YEAR, STUDIO, VECTOR) == []


def test_bad_values_are_named_by_file_row_and_column(tmp_path: Path) -> None:
    table = items_csv(
        tmp_path,
        "item_id,year,emb_0,emb_1,emb_2\na,nineteen,0.1,0.2,0.3\nb,1990,0.1,x,0.3\nc,1991,0.1,,\n",
    )
    assert problems_of(table, YEAR, VECTOR) == [
        "items.csv line 2, column year: 'nineteen' is not a number (feature)",
        "items.csv line 3, column emb_1: 'x' is not a number (vector feature)",
        "items.csv line 4, column emb_1: '' is not a number (vector feature)",
        "items.csv line 4, column emb_2: '' is not a number (vector feature)",
    ], "a partly empty vector is a problem; an empty one is missing"


def test_missing_columns_are_reported(tmp_path: Path) -> None:
    table = items_csv(tmp_path, "item_id,emb_0,emb_1\na,1,2\n")
    assert problems_of(table, YEAR, VECTOR) == [
        "items.csv: missing column 'year' needed by numeric feature",
        "items.csv: vector feature 'emb' has dim=3, but column 'emb_2' is missing",
    ]


def test_a_parquet_list_column_is_a_vector_and_its_width_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "items.parquet"
    pd.DataFrame(
        {"item_id": ["a", "b", "c"], "emb": [[0.5, 1.0, -2.0], None, [1.0, 2.0]]}
    ).to_parquet(path)
    table = read_table(path)
    assert problems_of(table, VECTOR) == [
        "items.parquet row 3, column emb: a vector of 2 values, the feature has dim=3"
    ]
    good = RawTable(table.frame.iloc[:2].reset_index(drop=True), "items.parquet", 1, "row")
    fitted, _ = fit_features(good, [VECTOR], seed=0)
    arrays, _ = encode_features(good, fitted)
    np.testing.assert_allclose(arrays["emb"], [[0.5, 1.0, -2.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def test_numeric_is_standardised_with_a_missing_flag(tmp_path: Path) -> None:
    table = items_csv(tmp_path, "item_id,year\na,1990\nb,2000\nc,\n")
    fitted, _ = fit_features(table, [YEAR], seed=0)
    spec = fitted.specs[0]
    assert (spec.mean, spec.std) == (1995.0, 5.0)
    arrays, _ = encode_features(table, fitted)
    np.testing.assert_allclose(arrays["year"], [[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])


def test_tokens_get_indices_unknown_tokens_the_unknown_index(tmp_path: Path) -> None:
    table = items_csv(tmp_path, "item_id,genres,studio\na,Drama|Comedy,X\nb,Drama,\n")
    fitted, _ = fit_features(table, [GENRES, STUDIO], seed=0)
    assert fitted.tokens["genres"].ids == ("Comedy", "Drama")
    arrays, _ = encode_features(table, fitted)
    assert arrays["genres"].tolist() == [[FIRST_ID + 1, FIRST_ID], [FIRST_ID + 1, 0]]
    assert arrays["studio"].tolist() == [FIRST_ID, 0]
    new = items_csv(tmp_path, "item_id,genres,studio\nc,Horror|Drama,Y\n")
    arrays, _ = encode_features(new, fitted)
    assert arrays["genres"].tolist() == [[1, FIRST_ID + 1]], "unseen token -> unknown (1)"
    assert arrays["studio"].tolist() == [1]


def test_item_content_is_indexed_by_the_item_vocabulary(tmp_path: Path) -> None:
    table = items_csv(tmp_path, "item_id,year\nz,2000\na,1990\n")
    content = item_content(table, [YEAR], Vocab.build(["a", "z"]), seed=0)
    year = content.arrays["year"]
    assert year.shape == (FIRST_ID + 2, 2)
    assert year[FIRST_ID].tolist() == [-1.0, 0.0]
    assert year[FIRST_ID + 1].tolist() == [1.0, 0.0]
    assert [(i.column, i.kind, i.width) for i in content.inputs] == [("year", "numeric", 2)]


def test_a_shuffled_column_keeps_its_values_and_loses_their_items(tmp_path: Path) -> None:
    rows = "".join(f"i{k},{1900 + k}\n" for k in range(50))
    table = items_csv(tmp_path, "item_id,year\n" + rows)
    shuffled = YEAR.model_copy(update={"shuffled": True})
    _, permuted = fit_features(table, [shuffled], seed=0)
    assert sorted(permuted.frame["year"]) == sorted(table.frame["year"])
    assert (permuted.frame["year"] != table.frame["year"]).mean() > 0.9


def test_a_bad_items_file_stops_training_with_every_problem(data_dir: Path) -> None:
    from training.data.sources import load_tables

    (data_dir / "items.csv").write_text(
        "item_id,title,genres,year\n" + "".join(f"i{i},Item {i},Drama,19x{i}\n" for i in range(6))
    )
    with pytest.raises(DataError) as e:
        load_tables(str(data_dir), [], features=[GENRES, YEAR])
    assert "6 problem(s)" in str(e.value)
    assert "items.csv line 2, column year: '19x0' is not a number (feature)" in str(e.value)


def test_feature_specs_are_validated() -> None:
    with pytest.raises(ValueError, match="needs dim"):
        FeatureSpec(column="emb", kind="vector")
    with pytest.raises(ValueError, match="is an id"):
        FeatureSpec(column="item_id", kind="categorical")
    with pytest.raises(ValueError, match="must match"):
        FeatureSpec(column="release year", kind="numeric")
