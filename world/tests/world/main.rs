//! The engine on the figure world: the committed figure model on held-out renders, the
//! people clips and their boxes, and top-down inference on two figures.

mod figure;
mod people;
mod top_down;
