"""The multi-task network: encoders of history and content, the shared block (shared-bottom,
MMoE, PLE), and one head per task."""
