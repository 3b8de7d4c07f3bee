"""Count words with a shuffle (reduceByKey) over generated text; prints the top words and
how many distinct nodes the executors ran on.

    wordcount.py [LINES] [PARTITIONS]

Each line is "alpha x5, beta x3, gamma x2, delta" in a scrambled order, so with
LINES lines the counts are 5, 3, 2 and 1 times LINES.
"""

import os
import sys
from operator import add

from pyspark.sql import SparkSession

LINE = ["alpha"] * 5 + ["beta"] * 3 + ["gamma"] * 2 + ["delta"]


def line_for(i: int) -> str:
    words = LINE[i % len(LINE):] + LINE[: i % len(LINE)]
    return " ".join(words)


def node_of(_: int) -> str:
    return os.environ.get("NM_HOST", "?") + ":" + os.environ.get("NM_PORT", "?")


if __name__ == "__main__":
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    partitions = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    spark = SparkSession.builder.appName("CortexWordCount").getOrCreate()
    sc = spark.sparkContext
    text = sc.parallelize(range(lines), partitions).map(line_for)
    counts = text.flatMap(lambda line: line.split()).map(lambda w: (w, 1)).reduceByKey(add, partitions)
    for word, count in sorted(counts.collect(), key=lambda wc: (-wc[1], wc[0])):
        print(f"WORD {word} {count}")
    nodes = sc.parallelize(range(partitions * 8), partitions * 8).map(node_of).distinct().collect()
    print(f"EXECUTOR NODES {len(nodes)} {sorted(nodes)}")
    spark.stop()
