pub mod proto {
    tonic::include_proto!("tributary.v1");
}
