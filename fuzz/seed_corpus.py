#!/usr/bin/env python3
"""(Re)writes the seed inputs of every fuzz target from ../../shared/vectors/golix.

Seeds are named seed-*; libFuzzer adds its own finds beside them (git-ignored).
Run from anywhere: python3 fuzz/seed_corpus.py
"""
import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
VECTORS = HERE.parent.parent / "shared" / "vectors" / "golix"
CORPUS = HERE / "corpus"


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


def main():
    ghid_files = sorted(VECTORS.glob("**/*.ghid"))
    for f in ghid_files:
        tag = f"{f.parent.name}-{f.stem[:16]}"
        put("golix_object", tag, f.read_bytes())
        put("ghid_str", tag, f.stem.encode())
    keys = json.loads((VECTORS / "keys_hgx_save_a.json").read_text())["hgx_save_a"]
    manifest = json.loads((VECTORS / "generated_ref_v16" / "manifest.json").read_text())
    plaintexts = [(g[:16], o["inner_plaintext_hex"]) for g, o in keys["garq_opened"].items()]
    plaintexts += [(n, o["inner_plaintext_hex"]) for n, o in manifest["cs1"].items()
                   if "inner_plaintext_hex" in o]
    for name, hx in plaintexts:
        put("golix_request", name, bytes.fromhex(hx))
    secrets = {g[:16]: b"SH\x00\x02\x01" + bytes.fromhex(o["key_hex"]) + bytes.fromhex(o["nonce_hex"])
               for g, o in keys["geoc_secrets"].items()}
    secrets["dummy"] = b"SH\x00\x02\x00" + bytes(32)
    for name, data in secrets.items():
        put("golix_secret", name, data)


if __name__ == "__main__":
    main()
