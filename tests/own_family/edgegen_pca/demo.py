"""The demo's showcase: samples and reconstructions."""


from edgegen.images import save_grid


def showcase(pipe, folder, name):
    save_grid(pipe.sample(16, seed=0), folder / f"{name}_samples.png", nrow=8)
    return {"latent_dim": pipe.latent_dim}, [f"![{name} samples]({name}_samples.png)", ""]
