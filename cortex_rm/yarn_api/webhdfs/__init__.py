"""WebHDFS, the file system's wire: the NameNode's ``/webhdfs/v1`` on the RM's web port and the
DataNode's on each node's web port (data, after a redirect), plus the nodes' block transfers.

Hadoop's ``WebHdfsFileSystem`` (in the ``hadoop-client-api`` jar every Spark ships)
parses our JSON only when the reply has no ``Content-Type`` header
(``yarn-wire-facts.md`` §7), so no JSON reply here names one.
"""
