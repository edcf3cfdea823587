from backupctl.cli.main import entry

entry()
