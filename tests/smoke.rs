mod common;

use common::*;

#[tokio::test]
async fn the_gateway_forwards_to_a_recording_upstream() {
    let upstream = spawn_recording_upstream("api").await;
    let gateway = TestGateway::start(&format!(
        "[upstreams.api]\nurl = \"http://{upstream}\"\n\n[[routes]]\nname = \"api\"\npath_prefix = \"/api\"\nupstream = \"api\"\n"
    ))
    .await;
    let reply = send(gateway.addr(), get(gateway.addr(), "/api/x?y=1", &[])).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["path"], "/api/x");
    assert_eq!(reply.upstream_header("host"), vec![upstream.to_string()]);
}
