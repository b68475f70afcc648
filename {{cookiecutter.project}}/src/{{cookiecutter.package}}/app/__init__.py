"""The app: its prompts, the model client, the contract the framework serves and evaluates, the
embedded model. Nothing here names the example app."""
