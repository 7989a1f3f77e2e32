"""Score examples/models/quickstart_inputs through a running `mlserver start examples/serving`
(V2 REST, plain HTTP) and compare with the library's own scores.

    PYTHONPATH=python mlserver start examples/serving &        # from the checkout
    python examples/serving/client.py [http://127.0.0.1:8080]
"""

import json
import os
import sys
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "models")
URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
NAMES = ["user_id", "item_id", "category", "recent_items", "price"]

x = {name: np.load(os.path.join(MODELS, "quickstart_inputs", f"in_{name}.npy")) for name in NAMES}
body = {"inputs": [{"name": name, "datatype": "FP32" if a.dtype.kind == "f" else "INT64",
                    "shape": list(a.shape), "data": a.reshape(-1).tolist()} for name, a in x.items()]}
req = urllib.request.Request(f"{URL}/v2/models/quickstart/infer", data=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=30) as r:
    resp = json.loads(r.read())
got = np.concatenate([np.asarray(o["data"], np.float32).reshape(o["shape"]) for o in resp["outputs"]], axis=1)
print("outputs", [o["name"] for o in resp["outputs"]], "batch", resp["parameters"]["ple_batch_size"])
print(got)

try:
    import ple_runtime
except ImportError:
    sys.exit(0)
with ple_runtime.Model(os.path.join(MODELS, "quickstart.ple")) as m:
    want = m.predict(x)
print("equal to Model.predict bit for bit:", bool(np.array_equal(got, want)))
