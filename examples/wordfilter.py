"""Word count with a helper module (--py-files) and a stop-word list (--archives), reading its
input from and writing its output to the cluster's file system.

    spark-submit --py-files wordlib.zip --archives words.tar.gz#words wordfilter.py IN OUT [PATH...]

Prints "KEPT <word> <count>" for the words it kept, and for each PATH whether any executor
saw a file there ("SEEN <path> <True|False>": a node should see nothing of the client's).
"""

import os
import sys

from pyspark.sql import SparkSession

import wordlib  # shipped with --py-files


def main() -> None:
    source, target, *probes = sys.argv[1:]
    spark = SparkSession.builder.appName("wordfilter").getOrCreate()
    sc = spark.sparkContext

    def stop_words() -> set[str]:
        # shipped with --archives words.tar.gz#words: unpacked as ./words in every container
        with open(os.path.join("words", "stopwords.txt")) as f:
            return {line.strip() for line in f if line.strip()}

    counts = (
        sc.textFile(source)
        .flatMap(wordlib.words)
        .mapPartitions(lambda ws: (w for w in ws if w not in stop_words()))
        .map(lambda w: (w, 1))
        .reduceByKey(lambda a, b: a + b)
        .sortByKey()
    )
    counts.map(lambda kv: f"{kv[0]}\t{kv[1]}").saveAsTextFile(target)
    for word, count in counts.collect():
        print(f"KEPT {word} {count}")
    for path in probes:
        seen = sc.parallelize(range(4), 4).map(lambda _, p=path: os.path.exists(p)).collect()
        print(f"SEEN {path} {any(seen)}")
    spark.stop()


if __name__ == "__main__":
    main()
