#!/usr/bin/env python3
"""Concurrent streams against a running hearth server (standard library only): each prompt is
completed greedily once alone, one after another, then all at once in groups of N, for each N
given; prints aggregate generation speed per N and whether every batched text equals its text
alone (the same request must give the same answer whatever else the server runs).

    scripts/serve-streams.py --url http://127.0.0.1:8080 --streams 1,4,8 --max-tokens 64
"""
import argparse
import json
import sys
import threading
import time
import urllib.request

PROMPTS = [
    "def fibonacci(n):", "import json\n\ndef load(path):", "class Stack:\n    def __init__(self):",
    "# Sort a list of numbers\n", "fn main() {\n", "SELECT name FROM users WHERE",
    "The quick brown fox", "def quicksort(xs):", "const express = require('express');\n",
    "#include <stdio.h>\n\nint main(void) {", "package main\n\nimport \"fmt\"\n", "<html>\n<head>",
    "def is_prime(n):", "for i in range(10):", "public class Main {", "struct Point {",
]


def complete(url, prompt, max_tokens):
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}).encode()
    req = urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        out = json.load(r)
    return out["choices"][0]["text"], out["usage"]["completion_tokens"]


def group(url, prompts, max_tokens):
    results = [None] * len(prompts)

    def run(i):
        results[i] = complete(url, prompts[i], max_tokens)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--streams", default="1,4,8")
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    ns = [int(x) for x in args.streams.split(",")]
    prompts = PROMPTS[: max(ns)]
    complete(args.url, prompts[0], 4)  # warm-up
    alone, secs_alone, toks_alone = [], 0.0, 0
    for p in prompts:
        s, [(text, n)] = group(args.url, [p], args.max_tokens)
        alone.append(text)
        secs_alone += s
        toks_alone += n
    report = {"alone": {"tok_s": toks_alone / secs_alone, "requests": len(prompts)}}
    ok = True
    for n in ns:
        secs, toks, same = 0.0, 0, 0
        for i in range(0, len(prompts), n):
            s, res = group(args.url, prompts[i : i + n], args.max_tokens)
            secs += s
            toks += sum(k for _, k in res)
            same += sum(text == alone[i + j] for j, (text, _) in enumerate(res))
        report[f"streams_{n}"] = {"tok_s": toks / secs, "same_as_alone": f"{same}/{len(prompts)}"}
        ok &= same == len(prompts)
    base = report["streams_1"]["tok_s"] if 1 in ns else report["alone"]["tok_s"]
    for n in ns:
        report[f"streams_{n}"]["x_one"] = round(report[f"streams_{n}"]["tok_s"] / base, 2)
    print(json.dumps(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
