"""The journal's state machine, idempotency and status; the spool's durable writes; the config."""

import pytest

from bonedeploy.dicomnode.config import Destination, ListenConfig
from bonedeploy.dicomnode.forward import backoff
from bonedeploy.dicomnode.journal import Journal
from bonedeploy.dicomnode.spool import Spool, safe_uid
from bonedeploy.errors import ConfigError


def test_states_in_order_and_resume_from_a_reopened_journal(tmp_path):
    j = Journal(tmp_path)
    assert j.add("1.2.3", "1.2.840.10008.5.1.4.1.1.1.1", "MOD", tmp_path / "a.dcm")
    assert j.add("1.2.4", "1.2.840.10008.5.1.4.1.1.1.1", "MOD", tmp_path / "b.dcm")
    assert not j.add("1.2.3", "1.2.840.10008.5.1.4.1.1.1.1", "MOD", tmp_path / "a.dcm")  # a resend
    j.set_analysed({"1.2.3": {"present": True}})
    j.close()
    j = Journal(tmp_path)  # a restart: nothing acknowledged is lost, nothing is redone
    assert [r["sop_uid"] for r in j.in_state("received")] == ["1.2.4"]
    assert [r["sop_uid"] for r in j.in_state("analysed")] == ["1.2.3"]
    j.set_reported([("1.2.3", ["r.dcm"], ["PACS@h:1", "B@h:2"])])
    assert [r["sop_uid"] for r in j.due("PACS@h:1", now=1e12)] == ["1.2.3"]
    j.delivered(["1.2.3"], "PACS@h:1")
    assert j.in_state("reported")[0]["sop_uid"] == "1.2.3"  # B has not got it yet
    j.failed("1.2.3", "B@h:2", "association rejected", next_try=5e11)
    assert j.due("B@h:2", now=1e11) == [] and j.next_due("B@h:2") == 5e11
    j.delivered(["1.2.3"], "B@h:2")
    status = j.status()
    assert status["states"] == {"received": 1, "analysed": 0, "reported": 0, "forwarded": 1}
    assert status["duplicates_received"] == 1
    assert status["destinations"]["B@h:2"]["last_error"] == "association rejected"
    assert status["destinations"]["B@h:2"]["pending"] == 0


def test_no_destination_means_reported_is_final(tmp_path):
    j = Journal(tmp_path)
    j.add("9.9", "1.2", "MOD", tmp_path / "x.dcm")
    j.set_analysed({"9.9": {"present": None, "not_analysed": "no pixel data"}})
    j.set_reported([("9.9", [], [])])
    assert j.status()["states"]["reported"] == 1 and j.status()["not_analysed"] == 1


def test_spool_writes_whole_files_named_by_uid_only(tmp_path):
    spool = Spool(tmp_path)
    path = spool.store("1.2.840.1", b"x" * 100_000)
    assert path == tmp_path / "incoming" / "1.2.840.1.dcm" and path.read_bytes() == b"x" * 100_000
    assert list(spool.incoming.glob(".*")) == []
    assert safe_uid("1.2.3") == "1.2.3" and safe_uid("1.2.3\x00") == "1.2.3"
    for bad in ("../../etc/passwd", "1.2.a", "", "1." + "2" * 70, None):
        assert safe_uid(bad) is None


def test_destination_and_config_refuse_bad_values():
    assert Destination.parse("ORTHANC@127.0.0.1:4242") == Destination("ORTHANC", "127.0.0.1", 4242)
    assert str(Destination.parse("PACS@[::1]:104")) == "PACS@::1:104"
    for bad in ("ORTHANC@127.0.0.1", "127.0.0.1:4242", "A@h:0", "THIS_TITLE_IS_TOO_LONG@h:1"):
        with pytest.raises(ConfigError):
            Destination.parse(bad)
    with pytest.raises(ConfigError, match="--allow-ae"):
        ListenConfig(engine="m.onnx", spool="s", allow_ae=("BAD\\AE",)).validate()
    assert ListenConfig(engine="m.onnx", spool="s", port=None).port == 11112  # None: the default


def test_backoff_doubles_up_to_the_cap():
    assert [backoff(n, 2.0, 20.0) for n in range(1, 6)] == [2.0, 4.0, 8.0, 16.0, 20.0]


def test_restart_removes_only_what_was_never_acknowledged(tmp_path):
    from bonedeploy.dicomnode.node import clean_spool

    spool, journal = Spool(tmp_path), Journal(tmp_path)
    kept = spool.store("1.2.1", b"acknowledged")
    journal.add("1.2.1", "1.2.840.10008.5.1.4.1.1.1.1", "MOD", kept)
    orphan = spool.store("1.2.2", b"spooled, then a crash before the journal commit")
    torn = spool.incoming / ".1.2.3.dcm.99.1.tmp"
    torn.write_bytes(b"half")
    clean_spool(spool, journal)
    assert kept.is_file() and not orphan.exists() and not torn.exists()
