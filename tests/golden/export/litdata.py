# written by `mixopt export --format litdata`
# NOTE: these are shares of training tokens, but CombinedStreamingDataset draws documents:
# a domain with longer documents gets more than its share. Re-export with
# --cache CACHE (or --doc-tokens NAME=N) to convert them.
# For data optimized with TokensLoader (fixed token blocks) use weights = token_shares.
from litdata import CombinedStreamingDataset, StreamingDataset

input_dirs = [
    "/data/web_text_document",
    "/data/code_0",
    "/data/code_1",
    "s3://bucket/books/train",
]
token_shares = (0.454, 0.163, 0.163, 0.22,)
weights = token_shares
datasets = [StreamingDataset(input_dir=d, shuffle=True, drop_last=True) for d in input_dirs]
combined_dataset = CombinedStreamingDataset(
    datasets=datasets,
    seed=0,
    weights=weights,
    iterate_over_all=False,
)
