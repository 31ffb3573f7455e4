"""The operator CLI (`mmrag`): runs the deployables by name and drives the local stack, the demo and the tools."""
