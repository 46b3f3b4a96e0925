"""Ask the served model (`gha-mlops package digits`, then `docker run`) for a few test digits.

    python src/query.py [HOST:PORT] [COUNT]

Sends COUNT images of data/prepared/x_test.npy (default 5) in one Open Inference Protocol V2
request and prints the predicted digit next to the true one. Any V2 client works the same
way: KServe's, Triton's `tritonclient`, MLServer's, or curl.
"""

from __future__ import annotations

import json
import sys
import urllib.request

import numpy as np


def main() -> None:
    address = sys.argv[1] if len(sys.argv) > 1 else "localhost:8080"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    images = np.load("data/prepared/x_test.npy")[:count]
    labels = np.load("data/prepared/y_test.npy")[:count]
    body = {"inputs": [{"name": "input", "shape": list(images.shape), "datatype": "FP32",
                        "data": images.reshape(-1).tolist()}]}
    request = urllib.request.Request(
        f"http://{address}/v2/models/digits/infer", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.load(response)
    output = answer["outputs"][0]
    logits = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    for predicted, true in zip(logits.argmax(axis=1), labels, strict=True):
        print(f"predicted {predicted}  true {true}")


if __name__ == "__main__":
    main()
