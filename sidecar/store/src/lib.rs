//! shmpipe-store: the sidecar's store layer (objects in `file://`, `s3://` or `memory://`
//! stores, checksummed by the sidecar, streamed from and into slots). Work in progress.
