//! Rank environment parsing for each launcher's variables, and the named errors.

use std::collections::HashMap;
use std::time::Duration;

use plsc_comm::CommError;
use plsc_comm::env::{DEFAULT_RENDEZVOUS_TIMEOUT, Launcher, RankEnv};

fn parse(vars: &[(&str, &str)]) -> Result<Option<RankEnv>, CommError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    RankEnv::from_vars(|k| map.get(k).cloned())
}

fn env_error_var(r: Result<Option<RankEnv>, CommError>) -> String {
    match r {
        Err(CommError::Env { var, .. }) => var,
        other => panic!("expected an Env error, got {other:?}"),
    }
}

#[test]
fn no_launcher_variables_is_none() {
    assert_eq!(parse(&[]).unwrap(), None);
    assert_eq!(
        parse(&[("MASTER_ADDR", "10.0.0.1"), ("HOME", "/root")]).unwrap(),
        None
    );
}

#[test]
fn torchrun_variables() {
    let env = parse(&[
        ("RANK", "3"),
        ("WORLD_SIZE", "8"),
        ("LOCAL_RANK", "1"),
        ("LOCAL_WORLD_SIZE", "2"),
        ("MASTER_ADDR", "10.0.0.1"),
        ("MASTER_PORT", "29500"),
        ("PLSC_COMM_BACKEND", "MPI"),
        ("PLSC_RENDEZVOUS_TIMEOUT_S", "2.5"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(
        env,
        RankEnv {
            rank: 3,
            world_size: 8,
            local_rank: 1,
            local_world_size: Some(2),
            master_addr: Some("10.0.0.1".into()),
            master_port: Some(29500),
            backend: Some("mpi".into()),
            rendezvous_timeout: Duration::from_millis(2500),
            launcher: Launcher::Torchrun,
        }
    );
    assert_eq!(env.master().unwrap(), ("10.0.0.1".to_string(), 29500));
}

#[test]
fn torchrun_defaults_and_missing_master() {
    let env = parse(&[("RANK", "0"), ("WORLD_SIZE", "1")])
        .unwrap()
        .unwrap();
    assert_eq!(env.local_rank, 0);
    assert_eq!(env.local_world_size, None);
    assert_eq!(env.backend, None);
    assert_eq!(env.rendezvous_timeout, DEFAULT_RENDEZVOUS_TIMEOUT);
    match env.master() {
        Err(CommError::Env { var, .. }) => assert_eq!(var, "MASTER_ADDR"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn paddle_variables_with_endpoints() {
    let vars = [
        ("PADDLE_TRAINER_ID", "3"),
        ("PADDLE_TRAINERS_NUM", "4"),
        (
            "PADDLE_TRAINER_ENDPOINTS",
            "10.0.0.1:6170,10.0.0.1:6171,10.0.0.2:6170,10.0.0.2:6171",
        ),
    ];
    let env = parse(&vars).unwrap().unwrap();
    assert_eq!(env.launcher, Launcher::Paddle);
    assert_eq!((env.rank, env.world_size), (3, 4));
    // The master is the first endpoint; the local rank counts the same host's endpoints.
    assert_eq!(env.master().unwrap(), ("10.0.0.1".to_string(), 6170));
    assert_eq!(env.local_rank, 1);
    assert_eq!(env.local_world_size, Some(2));

    // MASTER_ADDR / MASTER_PORT and PADDLE_RANK_IN_NODE take precedence.
    let mut more = vars.to_vec();
    more.extend([
        ("MASTER_ADDR", "192.168.1.9"),
        ("MASTER_PORT", "7000"),
        ("PADDLE_RANK_IN_NODE", "0"),
    ]);
    let env = parse(&more).unwrap().unwrap();
    assert_eq!(env.master().unwrap(), ("192.168.1.9".to_string(), 7000));
    assert_eq!(env.local_rank, 0);
}

#[test]
fn paddle_endpoint_count_must_match() {
    let r = parse(&[
        ("PADDLE_TRAINER_ID", "0"),
        ("PADDLE_TRAINERS_NUM", "3"),
        ("PADDLE_TRAINER_ENDPOINTS", "a:1,b:2"),
    ]);
    assert_eq!(env_error_var(r), "PADDLE_TRAINER_ENDPOINTS");
    let r = parse(&[
        ("PADDLE_TRAINER_ID", "0"),
        ("PADDLE_TRAINERS_NUM", "1"),
        ("PADDLE_TRAINER_ENDPOINTS", "hostonly"),
    ]);
    assert_eq!(env_error_var(r), "PADDLE_TRAINER_ENDPOINTS");
}

#[test]
fn open_mpi_variables() {
    let env = parse(&[
        ("OMPI_COMM_WORLD_RANK", "5"),
        ("OMPI_COMM_WORLD_SIZE", "6"),
        ("OMPI_COMM_WORLD_LOCAL_RANK", "2"),
        ("OMPI_COMM_WORLD_LOCAL_SIZE", "3"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(env.launcher, Launcher::OpenMpi);
    assert_eq!((env.rank, env.world_size, env.local_rank), (5, 6, 2));
    assert_eq!(env.local_world_size, Some(3));
    assert_eq!(plsc_comm::backend::default_backend(&env), "mpi");
}

#[test]
fn ours_take_precedence_over_open_mpi() {
    let env = parse(&[
        ("RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("OMPI_COMM_WORLD_RANK", "0"),
        ("OMPI_COMM_WORLD_SIZE", "4"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(env.launcher, Launcher::Torchrun);
    assert_eq!((env.rank, env.world_size), (1, 2));
}

#[test]
fn malformed_and_inconsistent_values_name_the_variable() {
    assert_eq!(env_error_var(parse(&[("RANK", "0")])), "WORLD_SIZE");
    assert_eq!(env_error_var(parse(&[("WORLD_SIZE", "2")])), "RANK");
    assert_eq!(
        env_error_var(parse(&[("RANK", "x"), ("WORLD_SIZE", "2")])),
        "RANK"
    );
    assert_eq!(
        env_error_var(parse(&[("RANK", "2"), ("WORLD_SIZE", "2")])),
        "RANK"
    );
    assert_eq!(
        env_error_var(parse(&[("RANK", "0"), ("WORLD_SIZE", "0")])),
        "WORLD_SIZE"
    );
    assert_eq!(
        env_error_var(parse(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_PORT", "70000")
        ])),
        "MASTER_PORT"
    );
    assert_eq!(
        env_error_var(parse(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("PLSC_RENDEZVOUS_TIMEOUT_S", "-1")
        ])),
        "PLSC_RENDEZVOUS_TIMEOUT_S"
    );
    assert_eq!(
        env_error_var(parse(&[
            ("OMPI_COMM_WORLD_RANK", "0"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "4"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
        ])),
        "LOCAL_RANK"
    );
}

#[test]
fn backends_name_what_is_missing() {
    let env = parse(&[("RANK", "0"), ("WORLD_SIZE", "2")])
        .unwrap()
        .unwrap();
    for (name, what) in [("threads", "one process"), ("bogus", "unknown backend")] {
        match plsc_comm::backend::connect(name, &env) {
            Err(CommError::BackendUnavailable { backend, detail }) => {
                assert_eq!(backend, name);
                assert!(detail.contains(what), "{detail}");
            }
            other => panic!("{name}: {:?}", other.map(|c| c.rank())),
        }
    }
    #[cfg(not(feature = "mpi"))]
    match plsc_comm::backend::connect("mpi", &env) {
        Err(CommError::BackendUnavailable { backend, detail }) => {
            assert_eq!(backend, "mpi");
            assert!(detail.contains("feature `mpi`"), "{detail}");
        }
        other => panic!("{:?}", other.map(|c| c.rank())),
    }
    #[cfg(not(feature = "nccl"))]
    match plsc_comm::backend::connect("NCCL", &env) {
        Err(CommError::BackendUnavailable { backend, detail }) => {
            assert_eq!(backend, "nccl");
            assert!(detail.contains("feature `nccl`"), "{detail}");
        }
        other => panic!("{:?}", other.map(|c| c.rank())),
    }
    // World size 1 gets a working single-rank communicator.
    let one = parse(&[("RANK", "0"), ("WORLD_SIZE", "1")])
        .unwrap()
        .unwrap();
    let comm = plsc_comm::backend::connect("threads", &one).unwrap();
    assert_eq!((comm.rank(), comm.world_size()), (0, 1));
    let mut x = [2.5f32];
    plsc_comm::CommExt::all_reduce(&*comm, &mut x, plsc_comm::ReduceOp::Sum).unwrap();
    assert_eq!(x, [2.5]);
}
