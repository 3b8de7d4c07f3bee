"""A job that raises: Cortex must end it FAILED after its attempts, with the error in diagnostics."""

from pyspark.sql import SparkSession

if __name__ == "__main__":
    spark = SparkSession.builder.appName("CortexFail").getOrCreate()
    spark.sparkContext.parallelize([1, 2, 3]).count()
    raise RuntimeError("this job fails on purpose")
