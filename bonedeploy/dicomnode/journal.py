"""The node's journal (SQLite): every acknowledged instance and where it is on its way.

States, in order: ``received`` (spooled, acknowledged) -> ``analysed`` (finding known, in the row)
-> ``reported`` (SR written to the spool) -> ``forwarded`` (every destination has it). With no
destination ``reported`` is final. Deliveries (one per report and destination) carry their own
attempts, next try and last error. The database runs in WAL mode with ``synchronous=FULL``: a
commit is on disk before the C-STORE response goes out, so a crash never loses an acknowledged
instance. One connection, serialised by a lock: the SCP's association threads, the analyser and
the forwarder share it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

STATES = ("received", "analysed", "reported", "forwarded")
FILENAME = "journal.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY, sop_class TEXT NOT NULL, calling_ae TEXT, path TEXT NOT NULL,
    state TEXT NOT NULL, received_at REAL NOT NULL, updated_at REAL NOT NULL,
    finding TEXT, reports TEXT, duplicates INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS instances_state ON instances (state, received_at);
CREATE TABLE IF NOT EXISTS deliveries (
    sop_uid TEXT NOT NULL, destination TEXT NOT NULL, sent_at REAL, attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0, last_error TEXT, PRIMARY KEY (sop_uid, destination));
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (sent_at, next_try);
CREATE TABLE IF NOT EXISTS destinations (
    name TEXT PRIMARY KEY, last_error TEXT, last_error_at REAL, last_ok_at REAL);
"""


class Journal:
    def __init__(self, spool: Path, readonly: bool = False):
        self.path = Path(spool) / FILENAME
        if readonly:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, args: Iterable[Any] = ()) -> int:
        with self._lock:
            return self._db.execute(sql, tuple(args)).rowcount

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    # receiving ---------------------------------------------------------------------------------
    def known(self, sop_uid: str) -> bool:
        return bool(self._rows("SELECT 1 FROM instances WHERE sop_uid = ?", (sop_uid,)))

    def add(self, sop_uid: str, sop_class: str, calling_ae: str, path: Path) -> bool:
        """Record a spooled instance; False when it was already there (counted as a duplicate)."""
        now = time.time()
        added = self._write("INSERT OR IGNORE INTO instances (sop_uid, sop_class, calling_ae, path, state, "
                            "received_at, updated_at) VALUES (?, ?, ?, ?, 'received', ?, ?)",
                            (sop_uid, sop_class, calling_ae, str(path), now, now))
        if not added:
            self.count_duplicate(sop_uid)
        return bool(added)

    def count_duplicate(self, sop_uid: str) -> None:
        self._write("UPDATE instances SET duplicates = duplicates + 1 WHERE sop_uid = ?", (sop_uid,))

    # analysing and reporting -------------------------------------------------------------------
    def in_state(self, state: str, limit: int | None = None) -> list[sqlite3.Row]:
        sql = "SELECT * FROM instances WHERE state = ? ORDER BY received_at"
        return self._rows(sql + (f" LIMIT {int(limit)}" if limit else ""), (state,))

    def set_analysed(self, results: dict[str, dict[str, Any]]) -> None:
        """{sop_uid: finding dict} for a batch, in one transaction."""
        now = time.time()
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE instances SET state = 'analysed', finding = ?, updated_at = ? "
                                 "WHERE sop_uid = ? AND state = 'received'",
                                 [(json.dumps(f), now, uid) for uid, f in results.items()])

    def set_reported(self, items: list[tuple[str, list[str], list[str]]]) -> None:
        """(uid, report files, destinations) per instance, whose files are on disk: mark them
        reported and queue one delivery per destination, in one transaction."""
        now = time.time()
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE instances SET state = 'reported', reports = ?, updated_at = ? "
                                 "WHERE sop_uid = ?", [(json.dumps(files), now, uid) for uid, files, _ in items])
            self._db.executemany("INSERT OR IGNORE INTO deliveries (sop_uid, destination) VALUES (?, ?)",
                                 [(uid, d) for uid, _, dests in items for d in dests])

    # forwarding --------------------------------------------------------------------------------
    def due(self, destination: str, now: float, limit: int = 64) -> list[sqlite3.Row]:
        return self._rows("SELECT d.sop_uid, d.attempts, i.reports FROM deliveries d JOIN instances i "
                          "USING (sop_uid) WHERE d.destination = ? AND d.sent_at IS NULL AND d.next_try <= ? "
                          "ORDER BY i.received_at LIMIT ?", (destination, now, limit))

    def next_due(self, destination: str) -> float | None:
        rows = self._rows("SELECT MIN(next_try) FROM deliveries WHERE destination = ? AND sent_at IS NULL",
                          (destination,))
        return rows[0][0] if rows else None

    def delivered(self, sop_uids: list[str], destination: str) -> None:
        """The destination has these reports: one commit for all of them."""
        now = time.time()
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE deliveries SET sent_at = ?, last_error = NULL WHERE sop_uid = ? AND "
                                 "destination = ?", [(now, uid, destination) for uid in sop_uids])
            self._db.executemany("UPDATE instances SET state = 'forwarded', updated_at = ? WHERE sop_uid = ? AND "
                                 "NOT EXISTS (SELECT 1 FROM deliveries WHERE sop_uid = ? AND sent_at IS NULL)",
                                 [(now, uid, uid) for uid in sop_uids])
            self._db.execute("INSERT INTO destinations (name, last_ok_at) VALUES (?, ?) ON CONFLICT(name) "
                             "DO UPDATE SET last_ok_at = excluded.last_ok_at", (destination, now))

    def failed(self, sop_uid: str, destination: str, error: str, next_try: float) -> None:
        now = time.time()
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute("UPDATE deliveries SET attempts = attempts + 1, next_try = ?, last_error = ? "
                             "WHERE sop_uid = ? AND destination = ?", (next_try, error, sop_uid, destination))
            self._db.execute("INSERT INTO destinations (name, last_error, last_error_at) VALUES (?, ?, ?) "
                             "ON CONFLICT(name) DO UPDATE SET last_error = excluded.last_error, "
                             "last_error_at = excluded.last_error_at", (destination, error, now))

    # status ------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        counts = {s: 0 for s in STATES}
        counts.update({r[0]: r[1] for r in self._rows("SELECT state, COUNT(*) FROM instances GROUP BY state")})
        not_analysed = self._rows("SELECT COUNT(*) FROM instances WHERE finding LIKE '%\"not_analysed\": \"%'")[0][0]
        dups = self._rows("SELECT COALESCE(SUM(duplicates), 0) FROM instances")[0][0]
        dests = {}
        for r in self._rows("SELECT destination, SUM(sent_at IS NULL), SUM(sent_at IS NOT NULL), "
                            "MAX(attempts) FROM deliveries GROUP BY destination"):
            dests[r[0]] = {"pending": r[1], "sent": r[2], "max_attempts": r[3]}
        for r in self._rows("SELECT * FROM destinations"):
            dests.setdefault(r["name"], {"pending": 0, "sent": 0, "max_attempts": 0}).update(
                last_error=r["last_error"], last_error_at=r["last_error_at"], last_ok_at=r["last_ok_at"])
        return {"states": counts, "not_analysed": not_analysed, "duplicates_received": dups,
                "destinations": dests}
