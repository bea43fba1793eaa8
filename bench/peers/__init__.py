"""Peers for `make bench ARGS=--peers`: the same artifact behind a plain FastAPI app and behind
BentoML, served on 127.0.0.1 with as many workers as hydrarec, each peer doing the same work per
request (`bench.peers.model`). Their pinned versions are in `requirements.txt`."""
