"""AES-256-GCM sealing: round trips, the blob format, tampering, AAD binding, rotation and
keyring parsing."""

import base64
import os

import pytest

from services.gateway.conversations.sealing import (
    DEV_KEYRING,
    NONCE_BYTES,
    Sealer,
    SealError,
)

AAD = b"conv_1/msg_1"


def key_text() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_a_sealed_blob_opens_to_its_plaintext_and_hides_it() -> None:
    sealer = Sealer.from_keyring(DEV_KEYRING)
    plaintext = "Secret plans «Ünïcode»".encode()
    blob = sealer.seal(plaintext, AAD)
    assert sealer.open(blob, AAD) == plaintext
    assert plaintext not in blob and b"Secret" not in blob
    # kid length | kid | nonce | ciphertext + 16-byte tag
    assert blob[0] == 3 and blob[1:4] == b"dev"
    assert len(blob) == 1 + 3 + NONCE_BYTES + len(plaintext) + 16
    # A fresh random nonce each time: equal plaintexts give different blobs.
    assert sealer.seal(plaintext, AAD) != blob
    assert sealer.open(sealer.seal(b"", AAD), AAD) == b""


def test_json_round_trips() -> None:
    sealer = Sealer.from_keyring(DEV_KEYRING)
    item = {"id": "msg_1", "type": "message", "content": [{"text": "héllo", "n": [1, None]}]}
    assert sealer.open_json(sealer.seal_json(item, AAD), AAD) == item


def test_a_tampered_or_truncated_blob_does_not_open() -> None:
    sealer = Sealer.from_keyring(DEV_KEYRING)
    blob = sealer.seal(b"hello", AAD)
    for index in (len(blob) - 1, 4, 4 + NONCE_BYTES):  # tag, nonce, ciphertext
        tampered = bytearray(blob)
        tampered[index] ^= 0x01
        with pytest.raises(SealError, match="tampered"):
            sealer.open(bytes(tampered), AAD)
    for short in (b"", blob[:10], blob[: 4 + NONCE_BYTES + 15]):
        with pytest.raises(SealError):
            sealer.open(short, AAD)


def test_a_blob_opens_only_with_the_aad_of_its_row() -> None:
    sealer = Sealer.from_keyring(DEV_KEYRING)
    blob = sealer.seal_json({"text": "for msg_1"}, b"conv_1/msg_1")
    with pytest.raises(SealError):
        sealer.open_json(blob, b"conv_1/msg_2")  # moved to another item
    with pytest.raises(SealError):
        sealer.open_json(blob, b"conv_2/msg_1")  # or another conversation


def test_an_unknown_key_id_is_a_seal_error_naming_it() -> None:
    ours = Sealer.from_keyring(f"a:{key_text()}")
    theirs = Sealer.from_keyring(f"b:{key_text()}")
    with pytest.raises(SealError, match=r"'b'.*not in the keyring"):
        ours.open(theirs.seal(b"x", AAD), AAD)


def test_a_different_key_under_the_same_id_does_not_open() -> None:
    with pytest.raises(SealError):
        Sealer.from_keyring(f"k:{key_text()}").open(
            Sealer.from_keyring(f"k:{key_text()}").seal(b"x", AAD), AAD
        )


def test_rotation_seals_with_the_new_key_and_still_opens_the_old() -> None:
    old, new = key_text(), key_text()
    before = Sealer.from_keyring(f"k1:{old}")
    blob = before.seal(b"written before the rotation", AAD)
    after = Sealer.from_keyring(f"k2:{new}, k1:{old}")
    assert (after.current_kid, after.kids) == ("k2", ["k2", "k1"])
    assert after.open(blob, AAD) == b"written before the rotation"
    fresh = after.seal(b"after", AAD)
    assert fresh[1:3] == b"k2"
    with pytest.raises(SealError):
        before.open(fresh, AAD)  # the old ring does not know k2
    # Once k1 is dropped from the ring, its blobs no longer open.
    with pytest.raises(SealError, match="'k1'"):
        Sealer.from_keyring(f"k2:{new}").open(blob, AAD)


@pytest.mark.parametrize(
    ("keyring", "message"),
    [
        ("", "entry 1 is not `kid:"),
        ("k1", "entry 1 is not `kid:"),
        (f"k1:{base64.b64encode(os.urandom(32)).decode()},", "entry 2 is not `kid:"),
        (":" + base64.b64encode(os.urandom(32)).decode(), "entry 1 is not `kid:"),
        ("k1:not base64!", "not base64"),
        ("k1:" + base64.b64encode(os.urandom(16)).decode(), "16 bytes; AES-256 needs 32"),
        ("k 1:" + base64.b64encode(os.urandom(32)).decode(), "key id 'k 1'"),
        ("k1:{0},k1:{0}".format(base64.b64encode(os.urandom(32)).decode()), "listed twice"),
    ],
)
def test_a_malformed_keyring_is_a_clear_value_error(keyring: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        Sealer.from_keyring(keyring)
    for part in keyring.replace(",", ":").split(":"):  # the key material never shows
        assert len(part) < 20 or part not in str(raised.value)


def test_the_keys_never_show_in_the_repr() -> None:
    sealer = Sealer.from_keyring(DEV_KEYRING)
    assert repr(sealer) == "Sealer(current='dev', kids=['dev'])"
    assert DEV_KEYRING.split(":")[1] not in repr(sealer)
