//! The condition types of a ClusterMesh's status, and what each one means
//! for `Ready`.

use std::fmt;

/// A condition type of the status. Every type is always listed, `Ready`
/// last; a problem type is True while there is such a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConditionType {
    InvalidSpec,
    CredentialsInvalid,
    ClustersUnreachable,
    PeerWritesFailing,
    CIDRConflict,
    PeerConflict,
    NodesSkipped,
    EndpointsUnresolvable,
    CredentialsExpiring,
    CleanupPending,
    Ready,
}

impl ConditionType {
    /// Every type, in the order the status lists them.
    pub const ALL: [Self; 11] = [
        Self::InvalidSpec,
        Self::CredentialsInvalid,
        Self::ClustersUnreachable,
        Self::PeerWritesFailing,
        Self::CIDRConflict,
        Self::PeerConflict,
        Self::NodesSkipped,
        Self::EndpointsUnresolvable,
        Self::CredentialsExpiring,
        Self::CleanupPending,
        Self::Ready,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidSpec => "InvalidSpec",
            Self::CredentialsInvalid => "CredentialsInvalid",
            Self::ClustersUnreachable => "ClustersUnreachable",
            Self::PeerWritesFailing => "PeerWritesFailing",
            Self::CIDRConflict => "CIDRConflict",
            Self::PeerConflict => "PeerConflict",
            Self::NodesSkipped => "NodesSkipped",
            Self::EndpointsUnresolvable => "EndpointsUnresolvable",
            Self::CredentialsExpiring => "CredentialsExpiring",
            Self::CleanupPending => "CleanupPending",
            Self::Ready => "Ready",
        }
    }

    /// The type named `name` in a status, if this version knows it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// True for a problem that makes the mesh not Ready while it is True;
    /// false for a warning (and for `Ready` itself).
    pub const fn blocks_ready(self) -> bool {
        !matches!(
            self,
            Self::NodesSkipped
                | Self::EndpointsUnresolvable
                | Self::CredentialsExpiring
                | Self::CleanupPending
                | Self::Ready
        )
    }

    /// Whether its appearance and its end are told as Events (reachability
    /// and skipped nodes are told per cluster and per node instead).
    pub const fn told_as_event(self) -> bool {
        matches!(
            self,
            Self::InvalidSpec
                | Self::CIDRConflict
                | Self::PeerConflict
                | Self::EndpointsUnresolvable
                | Self::CredentialsExpiring
                | Self::CleanupPending
        )
    }
}

impl fmt::Display for ConditionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_parses_back_from_its_name() {
        for type_ in ConditionType::ALL {
            assert_eq!(ConditionType::parse(type_.as_str()), Some(type_));
        }
        assert_eq!(ConditionType::parse("Unknown"), None);
    }

    #[test]
    fn ready_is_listed_last_and_blocks_nothing() {
        assert_eq!(ConditionType::ALL.last(), Some(&ConditionType::Ready));
        assert!(!ConditionType::Ready.blocks_ready());
    }
}
