"""The YARN wall: Hadoop IPC, our .proto subset, the YARN protocols and the RM REST API."""
