//! The server and client against each other on ephemeral loopback ports, with a seeded
//! `iresnet_tiny` written as an exported model directory.

use std::io::Cursor;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use plsc_data::decode::{ImageSpec, decode_into};
use plsc_models::{Backbone, BackboneConfig};
use plsc_serve::{
    Client, EncodeOptions, RunningServer, ServeConfig, ServeError, ServeModel, write_model_dir,
};
use serde_json::{Value, json};

const INPUT: usize = 32;
const DIM: usize = 16;

/// A seeded model, its export directory, and the input preprocessing of training.
struct Fixture {
    _dir: tempfile::TempDir,
    model_dir: std::path::PathBuf,
    backbone: Backbone<Flex>,
    spec: ImageSpec,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("model");
    let backbone: Backbone<Flex> = BackboneConfig::new("iresnet_tiny".into())
        .with_embedding_size(DIM)
        .with_input_size(INPUT)
        .init_seeded(7, &Default::default())
        .unwrap();
    write_model_dir(
        &backbone,
        "iresnet_tiny",
        vec![127.5; 3],
        vec![128.0; 3],
        42,
        &model_dir,
    )
    .unwrap();
    let spec = ImageSpec {
        height: INPUT as u32,
        width: INPUT as u32,
        channels: 3,
        mean: [127.5; 3],
        std: [128.0; 3],
        ..ImageSpec::default()
    };
    Fixture {
        _dir: dir,
        model_dir,
        backbone,
        spec,
    }
}

fn start(f: &Fixture, config: ServeConfig) -> RunningServer {
    let model = ServeModel::load(&f.model_dir).unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    RunningServer::start(model, config, addr).unwrap()
}

fn encode_as(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// Images of several sizes, channel counts and formats.
fn test_images() -> Vec<Vec<u8>> {
    let rgb = RgbImage::from_fn(INPUT as u32, INPUT as u32, |x, y| {
        Rgb([(x * 8) as u8, (y * 8) as u8, ((x + y) * 4) as u8])
    });
    let gray =
        image::GrayImage::from_fn(50, 40, |x, y| image::Luma([((x * 5 + y * 3) % 256) as u8]));
    let rgba = RgbaImage::from_fn(33, 31, |x, y| {
        Rgba([(x * 7) as u8, 200, (y * 7) as u8, 255])
    });
    let photo = RgbImage::from_fn(20, 24, |x, y| Rgb([(x * 12) as u8, 90, (y * 10) as u8]));
    vec![
        encode_as(DynamicImage::ImageRgb8(rgb), ImageFormat::Png),
        encode_as(DynamicImage::ImageLuma8(gray), ImageFormat::Png),
        encode_as(DynamicImage::ImageRgba8(rgba), ImageFormat::Png),
        encode_as(DynamicImage::ImageRgb8(photo), ImageFormat::Jpeg),
    ]
}

/// The model's own inference on `images` (training's decoder, one forward pass).
fn reference(f: &Fixture, images: &[Vec<u8>], flip: bool) -> Vec<Vec<f32>> {
    let numel = f.spec.numel();
    let mut x = vec![0.0f32; images.len() * numel];
    for (bytes, out) in images.iter().zip(x.chunks_exact_mut(numel)) {
        decode_into(bytes, &f.spec, flip, out).unwrap();
    }
    let t = Tensor::<Flex, 4>::from_data(
        TensorData::new(x, [images.len(), 3, INPUT, INPUT]),
        &Default::default(),
    );
    let y = f.backbone.forward(t).into_data().into_vec::<f32>().unwrap();
    y.chunks_exact(DIM).map(<[f32]>::to_vec).collect()
}

fn assert_close(a: &[Vec<f32>], b: &[Vec<f32>], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: count");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.len(), y.len(), "{what}: image {i} dim");
        for (j, (p, q)) in x.iter().zip(y).enumerate() {
            assert!(
                (p - q).abs() <= 1e-5,
                "{what}: image {i} value {j}: {p} vs {q}"
            );
        }
    }
}

/// A plain HTTP agent that hands back every status.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .new_agent()
}

/// POSTs raw bytes; returns status, Retry-After and the JSON body.
fn post_raw(addr: SocketAddr, path: &str, body: &[u8]) -> (u16, Option<String>, Value) {
    let mut r = agent()
        .post(format!("http://{addr}{path}"))
        .header("Content-Type", "application/json")
        .send(body)
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let text = r.body_mut().read_to_string().unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, retry, value)
}

fn b64(images: &[Vec<u8>]) -> Vec<String> {
    images.iter().map(|i| STANDARD.encode(i)).collect()
}

#[test]
fn client_round_trip_equals_the_models_own_inference() {
    let f = fixture();
    let server = start(&f, ServeConfig::default());
    let client = Client::connect(server.local_addr().to_string()).unwrap();
    let images = test_images();

    client.health().unwrap();
    let info = client.model().unwrap();
    assert_eq!(info.model.spec.architecture, "iresnet_tiny");
    assert_eq!(info.model.spec.embedding_size, DIM);
    assert_eq!(info.model.spec.input_size, INPUT);
    assert_eq!(info.model.source_step, 42);
    assert_eq!(info.limits.max_batch, 64);

    let plain = client.encode(&images).unwrap();
    assert_close(&plain, &reference(&f, &images, false), "plain");
    // One image alone gives the same embedding as in a batch.
    assert_close(
        &client.encode(&images[1..2]).unwrap(),
        &plain[1..2],
        "single",
    );

    let flipped = client
        .encode_with(
            &images,
            EncodeOptions {
                flip: true,
                normalize: false,
            },
        )
        .unwrap();
    let mirror = reference(&f, &images, true);
    let sum: Vec<Vec<f32>> = plain
        .iter()
        .zip(&mirror)
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x + y).collect())
        .collect();
    assert_close(&flipped, &sum, "flip");

    let unit = client
        .encode_with(
            &images,
            EncodeOptions {
                flip: false,
                normalize: true,
            },
        )
        .unwrap();
    for (u, p) in unit.iter().zip(&plain) {
        let norm = p.iter().map(|v| v * v).sum::<f32>().sqrt();
        let expected: Vec<f32> = p.iter().map(|v| v / norm).collect();
        assert_close(std::slice::from_ref(u), &[expected], "normalize");
    }
    server.shutdown().unwrap();
}

#[test]
fn plsc_route_speaks_plscs_json() {
    let f = fixture();
    let server = start(&f, ServeConfig::default());
    let addr = server.local_addr();
    let images = test_images();
    // Exactly what PLSC's FaceService.encode sends.
    let body = serde_json::to_vec(&json!({ "base64_string": b64(&images) })).unwrap();
    let (status, _, value) = post_raw(addr, "/FaceClassifyService/inference", &body);
    assert_eq!(status, 200, "{value}");
    let top = value.as_object().unwrap();
    assert_eq!(top.keys().collect::<Vec<_>>(), ["instance"]);
    let instances = top["instance"].as_array().unwrap();
    assert_eq!(instances.len(), images.len());
    let mut got = Vec::new();
    for inst in instances {
        let inst = inst.as_object().unwrap();
        assert_eq!(inst.keys().collect::<Vec<_>>(), ["embedding"]);
        let e: Vec<f32> = inst["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        got.push(e);
    }
    let expected = reference(&f, &images, false);
    assert_close(&got, &expected, "plsc route");
    let client = Client::connect(addr.to_string()).unwrap();
    assert_close(
        &client.encode_plsc(&images).unwrap(),
        &expected,
        "encode_plsc",
    );
    server.shutdown().unwrap();
}

/// The value of an unlabelled metric line `name value`.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

#[test]
fn concurrent_clients_all_succeed_and_share_batches() {
    let f = Arc::new(fixture());
    let config = ServeConfig {
        max_wait: Duration::from_millis(10),
        ..ServeConfig::default()
    };
    let server = start(&f, config);
    let addr = server.local_addr().to_string();
    let images = test_images();
    let expected = reference(&f, &images, false);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let addr = addr.clone();
            let image = images[t % images.len()].clone();
            let expected = expected[t % images.len()].clone();
            std::thread::spawn(move || {
                let client = Client::connect(addr).unwrap();
                for _ in 0..50 {
                    let got = client.encode(std::slice::from_ref(&image)).unwrap();
                    assert_close(&got, std::slice::from_ref(&expected), "concurrent");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let text = Client::connect(addr).unwrap().metrics().unwrap();
    let single = metric(&text, "plsc_serve_batch_requests_bucket{le=\"1\"}");
    let batches = metric(&text, "plsc_serve_batch_requests_count");
    let requests = metric(&text, "plsc_serve_batch_requests_sum");
    assert_eq!(requests, 400.0, "every request ran once");
    assert!(
        single < batches,
        "some backbone run held more than one request: {single} single of {batches}"
    );
    assert_eq!(
        metric(
            &text,
            "plsc_serve_requests_total{route=\"encode\",status=\"200\"}"
        ),
        400.0
    );
    let stats = server.handle().batch_stats();
    assert!(
        stats.multi_request_batches > 0 && stats.max_requests > 1,
        "{stats:?}"
    );
    assert_eq!(stats.images, 400);
    server.shutdown().unwrap();
}

#[test]
fn bad_input_gets_a_named_4xx_and_the_server_keeps_serving() {
    let f = fixture();
    let config = ServeConfig {
        max_body_bytes: 64 << 10,
        max_images_per_request: 4,
        max_image_pixels: 1 << 20,
        ..ServeConfig::default()
    };
    let server = start(&f, config);
    let addr = server.local_addr();
    let images = test_images();
    let good = serde_json::to_vec(&json!({ "images": b64(&images[..1]) })).unwrap();
    let expected = reference(&f, &images[..1], false);

    let png = &images[0];
    let truncated = STANDARD.encode(&png[..png.len() / 2]);
    let huge = STANDARD.encode(b"P6\n100000 100000\n255\n\x01\x02\x03");
    let ok = STANDARD.encode(png);
    let not_image = STANDARD.encode(b"this is plain text, not an image");
    let oversized = serde_json::to_vec(&json!({ "images": ["A".repeat(200 << 10)] })).unwrap();
    // (body, status, code, index, words in the message)
    type Case<'a> = (Vec<u8>, u16, &'a str, Option<u64>, &'a str);
    let cases: Vec<Case> = vec![
        (
            b"{\"images\": [".to_vec(),
            400,
            "bad_json",
            None,
            "invalid JSON",
        ),
        (b"[1, 2]".to_vec(), 400, "bad_json", None, "JSON object"),
        (
            b"{}".to_vec(),
            400,
            "bad_json",
            None,
            "missing field `images`",
        ),
        (
            serde_json::to_vec(&json!({ "images": [ok, ok, 3] })).unwrap(),
            400,
            "bad_json",
            Some(2),
            "image 2",
        ),
        (
            serde_json::to_vec(&json!({ "images": [ok], "flip": "yes" })).unwrap(),
            400,
            "bad_json",
            None,
            "`flip` must be true or false",
        ),
        (
            serde_json::to_vec(&json!({ "images": [ok], "normalise": true })).unwrap(),
            400,
            "bad_json",
            None,
            "unknown field `normalise`",
        ),
        (
            serde_json::to_vec(&json!({ "images": [] })).unwrap(),
            400,
            "no_images",
            None,
            "no images",
        ),
        (
            serde_json::to_vec(&json!({ "images": [ok, "!!not base64!!"] })).unwrap(),
            400,
            "bad_base64",
            Some(1),
            "image 1: invalid base64",
        ),
        (
            serde_json::to_vec(&json!({ "images": [ok, ok, not_image] })).unwrap(),
            422,
            "bad_image",
            Some(2),
            "image 2: not an image",
        ),
        (
            serde_json::to_vec(&json!({ "images": [truncated] })).unwrap(),
            422,
            "bad_image",
            Some(0),
            "image 0: not a decodable image",
        ),
        (
            serde_json::to_vec(&json!({ "images": [ok, huge] })).unwrap(),
            422,
            "bad_image",
            Some(1),
            "more than the limit",
        ),
        (
            serde_json::to_vec(&json!({ "images": [ok, ok, ok, ok, ok] })).unwrap(),
            413,
            "too_many_images",
            None,
            "5 images, more than the limit of 4",
        ),
        (
            oversized,
            413,
            "body_too_large",
            None,
            "larger than the limit of 65536 bytes",
        ),
    ];
    for (body, status, code, index, words) in &cases {
        let (got, _, value) = post_raw(addr, "/v1/encode", body);
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
        assert_eq!(got, *status, "{shown}: {value}");
        assert_eq!(value["code"], *code, "{shown}: {value}");
        assert_eq!(value["index"].as_u64(), *index, "{shown}: {value}");
        let message = value["error"].as_str().unwrap();
        assert!(
            message.contains(words),
            "{shown}: `{message}` lacks `{words}`"
        );
        // The next valid request succeeds.
        let (got, _, value) = post_raw(addr, "/v1/encode", &good);
        assert_eq!(got, 200, "after {shown}: {value}");
        let e: Vec<f32> = serde_json::from_value(value["embeddings"][0].clone()).unwrap();
        assert_close(&[e], &expected, "after a bad request");
    }
    // The PLSC route checks its input the same way.
    let (got, _, value) = post_raw(
        addr,
        "/FaceClassifyService/inference",
        &serde_json::to_vec(&json!({ "base64_string": [ok, "@@@"] })).unwrap(),
    );
    assert_eq!((got, value["index"].as_u64()), (400, Some(1)), "{value}");
    let (got, _, value) = post_raw(addr, "/nope", b"{}");
    assert_eq!((got, value["code"].as_str()), (404, Some("not_found")));

    // The client carries the server's message and index, and does not retry a 4xx.
    let client = Client::connect(addr.to_string()).unwrap();
    let err = client
        .encode(&[images[0].clone(), b"GIF89a not really".to_vec()])
        .unwrap_err();
    match &err {
        ServeError::Server {
            status,
            message,
            index,
            ..
        } => {
            assert_eq!((*status, *index), (422, Some(1)), "{err}");
            assert!(message.contains("image 1"), "{err}");
        }
        other => panic!("expected a server error, got {other}"),
    }
    let text = client.metrics().unwrap();
    assert!(metric(&text, "plsc_serve_errors_total") >= cases.len() as f64 + 3.0);
    server.shutdown().unwrap();
}

/// Waits until the server has `images` queued images.
fn wait_queued(server: &RunningServer, images: usize) {
    let t = Instant::now();
    while server.handle().metrics().queued_images() != images {
        assert!(t.elapsed() < Duration::from_secs(10), "nothing queued");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn full_queue_answers_503_with_retry_after_then_recovers() {
    let f = fixture();
    // The first job waits for company for 1 s, holding the whole queue.
    let config = ServeConfig {
        max_wait: Duration::from_secs(1),
        max_queue_images: 4,
        max_images_per_request: 4,
        ..ServeConfig::default()
    };
    let server = start(&f, config);
    let addr = server.local_addr();
    let images = test_images();
    let full = serde_json::to_vec(&json!({ "images": b64(&images) })).unwrap();
    let first = std::thread::spawn(move || post_raw(addr, "/v1/encode", &full));
    wait_queued(&server, 4);
    let one = serde_json::to_vec(&json!({ "images": b64(&images[..1]) })).unwrap();
    let (status, retry, value) = post_raw(addr, "/v1/encode", &one);
    assert_eq!(status, 503, "{value}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(value["code"], "queue_full");
    assert!(value["error"].as_str().unwrap().contains("queue is full"));
    let (status, _, value) = first.join().unwrap();
    assert_eq!(status, 200, "{value}");
    let (status, _, value) = post_raw(addr, "/v1/encode", &one);
    assert_eq!(status, 200, "{value}");
    server.shutdown().unwrap();
}

#[test]
fn timeouts_answer_504_and_fail_the_client() {
    let f = fixture();
    let config = ServeConfig {
        max_wait: Duration::from_millis(1500),
        request_timeout: Duration::from_millis(300),
        ..ServeConfig::default()
    };
    let server = start(&f, config);
    let addr = server.local_addr();
    let images = test_images();
    let body = serde_json::to_vec(&json!({ "images": b64(&images[..1]) })).unwrap();
    let (status, _, value) = post_raw(addr, "/v1/encode", &body);
    assert_eq!(
        (status, value["code"].as_str()),
        (504, Some("timeout")),
        "{value}"
    );
    // A client whose own timeout is shorter gives up first.
    let client = Client::connect(addr.to_string())
        .unwrap()
        .with_timeout(Duration::from_millis(100));
    let err = client.encode(&images[..1]).unwrap_err();
    assert!(matches!(err, ServeError::Transport { .. }), "{err}");
    assert!(err.to_string().to_lowercase().contains("timeout"), "{err}");
    server.shutdown().unwrap();
}

#[test]
fn shutdown_answers_requests_in_flight() {
    let f = fixture();
    let config = ServeConfig {
        max_wait: Duration::from_millis(600),
        ..ServeConfig::default()
    };
    let server = start(&f, config);
    let addr = server.local_addr();
    let images = test_images();
    let expected = reference(&f, &images, false);
    let in_flight = {
        let images = images.clone();
        std::thread::spawn(move || Client::connect(addr.to_string()).unwrap().encode(&images))
    };
    wait_queued(&server, images.len());
    server.shutdown().unwrap();
    let got = in_flight
        .join()
        .unwrap()
        .expect("the request in flight is answered");
    assert_close(&got, &expected, "in flight");
    // Nobody listens any more.
    let err = Client::connect(addr.to_string())
        .unwrap()
        .encode(&images[..1])
        .unwrap_err();
    assert!(matches!(err, ServeError::Transport { .. }), "{err}");
}

/// An address on which nothing listens.
fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[test]
fn connect_all_goes_round_robin_and_retries_on_another_server() {
    let f = fixture();
    let a = start(&f, ServeConfig::default());
    let b = start(&f, ServeConfig::default());
    let dead = dead_addr();
    let images = test_images();
    let expected = reference(&f, &images[..1], false);
    let client = Client::connect_all([
        a.local_addr().to_string(),
        dead.to_string(),
        b.local_addr().to_string(),
    ])
    .unwrap();
    for _ in 0..6 {
        assert_close(&client.encode(&images[..1]).unwrap(), &expected, "failover");
    }
    let served = |s: &RunningServer| s.handle().batch_stats().images;
    // Six calls starting at a, dead (-> b), b in turn: a twice, b four times.
    assert_eq!((served(&a), served(&b)), (2, 4));

    let nobody = Client::connect_all([dead.to_string(), dead_addr().to_string()]).unwrap();
    let err = nobody.encode(&images[..1]).unwrap_err();
    assert!(
        matches!(err, ServeError::AllServersFailed { tried: 2, .. }),
        "{err}"
    );
    assert!(matches!(
        Client::connect_all(Vec::<String>::new()),
        Err(ServeError::NoServers)
    ));
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}

#[test]
fn a_model_directory_with_a_bad_checksum_is_refused() {
    let f = fixture();
    let weights = f.model_dir.join("backbone.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    let err = ServeModel::load(&f.model_dir).unwrap_err();
    assert!(matches!(err, ServeError::LoadModel { .. }), "{err}");
    assert!(
        err.to_string().contains("sha256") || err.to_string().contains("checksum"),
        "{err}"
    );
    // The file that records the sha256 is named: model.json, not a checkpoint's manifest.
    let json = f.model_dir.join("model.json").display().to_string();
    assert!(
        err.to_string().contains(&format!("{json} records")),
        "{err}"
    );
    assert!(!err.to_string().contains("manifest"), "{err}");
    assert!(ServeModel::load(Path::new("/nonexistent/model")).is_err());
}

#[test]
fn a_known_route_with_another_method_answers_405_in_json() {
    let f = fixture();
    let server = start(&f, ServeConfig::default());
    let addr = server.local_addr();
    let cases = [
        ("GET", "/FaceClassifyService/inference", "POST"),
        ("GET", "/v1/encode", "POST"),
        ("POST", "/healthz", "GET"),
        ("DELETE", "/metrics", "GET"),
    ];
    for (method, path, allow) in cases {
        let url = format!("http://{addr}{path}");
        let mut r = match method {
            "GET" => agent().get(&url).call(),
            "DELETE" => agent().delete(&url).call(),
            _ => agent().post(&url).send(&b"{}"[..]),
        }
        .unwrap();
        assert_eq!(r.status().as_u16(), 405, "{method} {path}");
        let allowed = r
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(allowed.as_deref(), Some(allow), "{method} {path}");
        let text = r.body_mut().read_to_string().unwrap();
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: body is not JSON ({e}): {text:?}"));
        assert_eq!(value["code"], "method_not_allowed", "{value}");
        let message = value["error"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{method} {path}: this route takes {allow}")),
            "{message}"
        );
    }
    server.shutdown().unwrap();
}

#[test]
fn a_request_larger_than_max_batch_runs_in_chunks_and_keeps_its_order() {
    let f = fixture();
    let config = ServeConfig {
        max_batch: 3,
        ..ServeConfig::default()
    };
    let server = start(&f, config);
    let client = Client::connect(server.local_addr().to_string()).unwrap();
    let images = test_images();
    let got = client
        .encode_with(
            &images,
            EncodeOptions {
                flip: true,
                normalize: false,
            },
        )
        .unwrap();
    let (plain, mirror) = (reference(&f, &images, false), reference(&f, &images, true));
    let sum: Vec<Vec<f32>> = plain
        .iter()
        .zip(&mirror)
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x + y).collect())
        .collect();
    assert_close(&got, &sum, "chunked flip");
    let stats = server.handle().batch_stats();
    // 4 images and their mirror images: 8 rows in runs of at most 3.
    assert_eq!((stats.batches, stats.images, stats.max_images), (3, 8, 3));
    server.shutdown().unwrap();
}

/// Sets (or, with `None`, removes, as in files written before the field existed) the `resize`
/// field of the fixture's `model.json`.
fn set_model_json_resize(f: &Fixture, resize: Option<&str>) {
    let path = f.model_dir.join("model.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let obj = doc.as_object_mut().unwrap();
    match resize {
        Some(r) => obj.insert("resize".into(), json!(r)),
        None => obj.remove("resize"),
    };
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
}

#[test]
fn the_server_applies_the_resize_policy_model_json_records() {
    use plsc_data::Resize;
    let mut f = fixture();
    let doc: Value =
        serde_json::from_slice(&std::fs::read(f.model_dir.join("model.json")).unwrap()).unwrap();
    assert_eq!(doc["resize"], "squash", "export writes the policy");
    // The three images that are not square.
    let images = test_images()[1..].to_vec();
    let squashed = reference(&f, &images, false);
    for (recorded, policy) in [
        (Some("center-crop"), Resize::CenterCrop),
        (Some("pad"), Resize::Pad),
        (None, Resize::Squash),
    ] {
        set_model_json_resize(&f, recorded);
        let server = start(&f, ServeConfig::default());
        let client = Client::connect(server.local_addr().to_string()).unwrap();
        assert_eq!(client.model().unwrap().model.spec.resize, policy);
        let got = client.encode(&images).unwrap();
        f.spec.resize = policy;
        assert_close(&got, &reference(&f, &images, false), policy.name());
        if policy != Resize::Squash {
            assert!(
                got.iter()
                    .zip(&squashed)
                    .all(|(a, b)| a.iter().zip(b).any(|(x, y)| (x - y).abs() > 1e-3)),
                "{policy}: every non-square image differs from its squashed embedding"
            );
        }
        server.shutdown().unwrap();
    }
}
