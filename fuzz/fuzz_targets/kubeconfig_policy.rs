//! A kubeconfig from a Secret, which someone other than the operator's
//! admin wrote, through the operator's policy check and kube's own loading
//! (`kubeconfig::client_config`): never a panic, a looser policy never
//! refuses what a stricter one accepts, and a configuration built under a
//! policy never holds what that policy refuses, judged by what kube itself
//! will use (a plugin, a file, skipped TLS verification).
#![no_main]

use std::{
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

use kube::config::Kubeconfig;
use libfuzzer_sys::fuzz_target;
use operator::kubeconfig::{self, KubeconfigPolicy};

/// Every policy, by its three opt-in flags.
fn policies() -> impl Iterator<Item = KubeconfigPolicy> {
    (0u8..8).map(|bits| KubeconfigPolicy {
        allow_exec: bits & 1 != 0,
        allow_files: bits & 2 != 0,
        allow_insecure_tls: bits & 4 != 0,
    })
}

/// Whether `looser` allows everything `stricter` does.
fn allows(looser: KubeconfigPolicy, stricter: KubeconfigPolicy) -> bool {
    (looser.allow_exec || !stricter.allow_exec)
        && (looser.allow_files || !stricter.allow_files)
        && (looser.allow_insecure_tls || !stricter.allow_insecure_tls)
}

/// `client_config` awaits nothing that waits: one poll must finish it.
fn poll_once<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("client_config waited on something"),
    }
}

fn nonempty(value: &Option<String>) -> bool {
    value.as_deref().is_some_and(|v| !v.is_empty())
}

fuzz_target!(|data: &[u8]| {
    let Ok(yaml) = std::str::from_utf8(data) else {
        return;
    };
    // Never a panic on what a Secret holds.
    let token = kubeconfig::bearer_token(yaml);
    if kubeconfig::token_expiry(yaml).is_some() {
        assert!(token.is_some(), "an expiry without a token");
    }
    if let Ok(parsed) = Kubeconfig::from_yaml(yaml) {
        let verdicts: Vec<_> = policies()
            .map(|policy| (policy, kubeconfig::check(&parsed, policy).is_ok()))
            .collect();
        for (stricter, accepted) in &verdicts {
            for (looser, also) in &verdicts {
                if *accepted && allows(*looser, *stricter) {
                    assert!(also, "{looser:?} refuses what {stricter:?} accepts");
                }
            }
        }
    }
    // Plugins and files stay refused here: the fuzzer must not run
    // programs or read this machine's files.
    for allow_insecure_tls in [false, true] {
        let policy = KubeconfigPolicy {
            allow_insecure_tls,
            ..KubeconfigPolicy::default()
        };
        let Ok(config) = poll_once(kubeconfig::client_config(yaml, policy)) else {
            continue;
        };
        let user = &config.auth_info;
        assert!(user.exec.is_none(), "an exec plugin passed");
        assert!(user.auth_provider.is_none(), "an auth-provider passed");
        for file in [&user.token_file, &user.client_certificate, &user.client_key] {
            assert!(!nonempty(file), "a file passed: {file:?}");
        }
        assert!(config.root_cert_file.is_none(), "a CA file passed");
        if !allow_insecure_tls {
            assert!(
                !config.accept_invalid_certs,
                "insecure-skip-tls-verify passed"
            );
        }
    }
});
