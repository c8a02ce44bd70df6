# written by `mixopt export --format litdata`
from litdata import CombinedStreamingDataset, StreamingDataset

input_dirs = [
    "/data/web_text_document",
    "/data/code_0",
    "/data/code_1",
    "s3://bucket/books/train",
]
weights = (0.454, 0.163, 0.163, 0.22,)
datasets = [StreamingDataset(input_dir=d, shuffle=True, drop_last=True) for d in input_dirs]
combined_dataset = CombinedStreamingDataset(
    datasets=datasets,
    seed=0,
    weights=weights,
    iterate_over_all=False,
)
