"""The first-day traffic replayer (`edge360 replay`): model (pure), player, runner, report."""
