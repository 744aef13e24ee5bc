mod ipc_mock;
use ipc_mock::*;
use std::time::Instant;
#[actix_rt::test]
async fn timing() {
    let t = Instant::now();
    let (server, token) = start(MemDaemon::default()).await;
    eprintln!("started {:?}", t.elapsed());
    let (c, _) = RawConn::hello(&server.url(), &token).await;
    eprintln!("hello {:?}", t.elapsed());
    server.stop(true).await;
    eprintln!("stopped {:?}", t.elapsed());
    drop(c);
}
