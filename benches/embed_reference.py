"""The reference for `personas bench embed`: a plain Python onnxruntime loop
over the same model, texts, batch size and token limit as the embedder.

Usage: embed_reference.py MODEL_DIR TEXTS_JSON BATCH_SIZE MAX_TOKENS
Prints one JSON object: texts, seconds, texts_per_second, forward_seconds
(the time inside session.run alone: the model's forward pass, which
`personas bench vectors` uses as its floor), first_vector.
"""
import json
import sys
import time

import numpy as np
import onnxruntime
from tokenizers import Tokenizer

model_dir, texts_path, batch_size, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
texts = json.load(open(texts_path))
tokenizer = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
tokenizer.enable_truncation(max_tokens)
tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # longest in batch, as fastembed does
session = onnxruntime.InferenceSession(f"{model_dir}/model.onnx", providers=["CPUExecutionProvider"])
wanted = {i.name for i in session.get_inputs()}


forward_seconds = 0.0


def embed(batch):
    global forward_seconds
    encoded = tokenizer.encode_batch(batch)
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    feeds = {k: v for k, v in feeds.items() if k in wanted}
    started = time.perf_counter()
    hidden = session.run(None, feeds)[0]
    forward_seconds += time.perf_counter() - started
    weights = mask[:, :, None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


embed(texts[:batch_size])  # warm-up, as the embedder's load does
forward_seconds = 0.0
started = time.perf_counter()
vectors = [embed(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]
seconds = time.perf_counter() - started
print(json.dumps({
    "texts": len(texts),
    "seconds": seconds,
    "texts_per_second": len(texts) / seconds,
    "forward_seconds": forward_seconds,
    "first_vector": vectors[0][0].tolist(),
}))
