"""AWS side of the prod stack: object store, metadata engines, JuiceFS's S3 identity."""
