# written by `mixopt export --format torchtitan`
# For TorchTitan >= 0.3.0. In your config_registry function:
#     from mixopt_mixture import MIXOPT_DATALOADER
#     ... Trainer.Config(..., dataloader=MIXOPT_DATALOADER, ...)
# then run with --module <model> --config <that function>. Each source is packed
# into seq_len token sequences before interleaving, so the weights are token shares.
from datasets import load_dataset

from torchtitan.hf_datasets import DatasetConfig
from torchtitan.hf_datasets.text_datasets import (
    DATASETS,
    HFDataSource,
    InterleavedHuggingFaceTextDataLoader,
)

MIXOPT_PATHS = [
    "/data/web_text_document",
    "/data/code_0",
    "/data/code_1",
    "s3://bucket/books/train",
]
MIXOPT_DOMAINS = [
    "web",
    "code",
    "code",
    "books",
]
MIXOPT_WEIGHTS = [
    0.454,
    0.163,
    0.163,
    0.22,
]


def _load(path):
    return load_dataset(path, split="train", streaming=True)


for _i, _path in enumerate(MIXOPT_PATHS):
    DATASETS[f"mixopt_{_i}"] = DatasetConfig(
        path=_path,
        loader=_load,
        sample_processor=lambda sample: sample["text"],
    )

MIXOPT_DATALOADER = InterleavedHuggingFaceTextDataLoader.Config(
    sources=[
        HFDataSource(dataset=f"mixopt_{i}", weight=w)
        for i, w in enumerate(MIXOPT_WEIGHTS)
    ],
    seed=0,
    stopping_strategy="all_exhausted",
)
