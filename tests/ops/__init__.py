"""Operations tests: metrics, admin endpoints, CLI, deployment files, against real nodes."""
