"""ExampleGen: KuaiRand-layout (or synthetic) logs to a TFX `Examples` artifact."""
