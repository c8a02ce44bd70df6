"""Small local data for bench/frameworks_check.sh: three domains whose
documents differ 10x in length (books long, web short), each written as
JSON lines (for `mixopt prepare`, HF datasets, TorchTitan), as a LitData
optimized directory, as a MosaicML Streaming MDS directory, as
Megatron-LM indexed datasets and as OLMo-core token files. Every document
of a domain uses its own alphabet, so a sampled text tells its domain.

    python make_data.py OUT_DIR           (run with the torch venv)
"""

import json
import os
import sys

import numpy as np

DOMAINS = {
    # name (with the characters a hierarchy and a space bring): (alphabet, words per doc)
    "web:news": ("abcdef", 40),
    "books": ("ghijkl", 400),
    "code 2": ("mnopqr", 80),
}
N_DOCS = 300


def docs(name):
    alphabet, words = DOMAINS[name]
    rng = np.random.default_rng(sum(name.encode()))
    for _ in range(N_DOCS):
        yield " ".join("".join(rng.choice(list(alphabet), size=4)) for _ in range(words))


def as_item(text):
    return {"text": text}


def slug(name):
    return name.replace(":", "_").replace(" ", "_")


def main(out):
    import shutil

    for sub in ["jsonl", "olmo", "megatron", "mds", "litdata"]:
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    for name in DOMAINS:
        s = slug(name)
        texts = list(docs(name))
        jdir = os.path.join(out, "jsonl", s)
        os.makedirs(jdir, exist_ok=True)
        with open(os.path.join(jdir, "train.jsonl"), "w") as f:
            for t in texts:
                f.write(json.dumps({"text": t}) + "\n")
        ids = [np.frombuffer(t.encode(), dtype=np.uint8).astype(np.uint16) for t in texts]
        # OLMo-core: flat token files.
        odir = os.path.join(out, "olmo", s)
        os.makedirs(odir, exist_ok=True)
        np.concatenate(ids).astype(np.uint16).tofile(os.path.join(odir, "part-0.npy"))
        # Megatron-LM indexed dataset (.bin/.idx), with megatron-core's builder.
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
        import torch

        mdir = os.path.join(out, "megatron")
        os.makedirs(mdir, exist_ok=True)
        prefix = os.path.join(mdir, s + "_text_document")
        b = IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
        for a in ids:
            b.add_document(torch.from_numpy(a.astype(np.int64)), [len(a)])
        b.finalize(prefix + ".idx")
        # MosaicML Streaming MDS, fixed 64-token chunks (as llm-foundry's
        # concatenated text datasets are).
        from streaming import MDSWriter

        flat = np.concatenate(ids)
        with MDSWriter(out=os.path.join(out, "mds", s), columns={"tokens": "bytes", "domain": "str"}) as w:
            for i in range(0, len(flat) - 64, 64):
                w.write({"tokens": flat[i : i + 64].tobytes(), "domain": name})
        # LitData, one document per item.
        import litdata

        litdata.optimize(
            fn=as_item,
            inputs=texts * 10,  # enough items that 2000 draws exhaust no domain
            output_dir=os.path.join(out, "litdata", s),
            chunk_bytes="1MB",
            num_workers=1,
            mode="overwrite",
        )


if __name__ == "__main__":
    main(sys.argv[1])
