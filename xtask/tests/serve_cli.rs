//! `xtask serve` and `xtask encode` as processes: the server prints its port, encode prints
//! one JSON line per image equal to the library client's answer, SIGTERM stops the server
//! cleanly.

mod common;

use std::process::Command;
use std::time::Duration;

use burn::backend::Flex;
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use plsc_models::{Backbone, BackboneConfig};
use plsc_serve::{Client, write_model_dir};

#[test]
fn serve_and_encode_on_loopback_then_stop_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("model");
    let backbone: Backbone<Flex> = BackboneConfig::new("iresnet_tiny".into())
        .with_embedding_size(8)
        .with_input_size(28)
        .init_seeded(3, &Default::default())
        .unwrap();
    write_model_dir(
        &backbone,
        "iresnet_tiny",
        vec![127.5],
        vec![128.0],
        5,
        &model_dir,
    )
    .unwrap();
    let mut images = Vec::new();
    for (i, side) in [28u32, 40, 17].into_iter().enumerate() {
        let img = RgbImage::from_fn(side, side, |x, y| {
            Rgb([(x * 9) as u8, (y * 7) as u8, i as u8 * 60])
        });
        let path = tmp.path().join(format!("face{i}.png"));
        DynamicImage::ImageRgb8(img)
            .save_with_format(&path, ImageFormat::Png)
            .unwrap();
        images.push(path);
    }

    let mut server = common::ServeProcess::start(&model_dir);
    let addr = server.addr.clone();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["encode", "--server", &addr])
        .args(&images)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), images.len());
    let bytes: Vec<Vec<u8>> = images.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let expected = Client::connect(addr.clone())
        .unwrap()
        .encode(&bytes)
        .unwrap();
    for ((line, path), want) in lines.iter().zip(&images).zip(&expected) {
        assert_eq!(line["image"], path.display().to_string());
        let got: Vec<f32> = serde_json::from_value(line["embedding"].clone()).unwrap();
        assert_eq!(&got, want);
    }

    // A bad image: encode fails naming the file and the server's reason.
    let junk = tmp.path().join("junk.png");
    std::fs::write(&junk, b"not a png").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["encode", "--server", &addr])
        .arg(&images[0])
        .arg(&junk)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("junk.png") && err.contains("image 1"), "{err}");

    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the server did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "graceful exit on SIGTERM: {status:?}");
}
